"""Extended log-barrier, its schedule and the absolute-size loss."""

from __future__ import annotations

import io
import math

import pytest
import torch

from fcam.losses import BarrierSchedule, LogBarrier, SizeLoss, log_barrier, size_loss


def _psi(z: float, t: float) -> float:
    """Kervadec et al.'s extended log-barrier, written from the paper's formula."""
    if z <= -1 / t**2:
        return -math.log(-z) / t
    return t * z - math.log(1 / t**2) / t + 1 / t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t", [1.0, 1.645, 5.0])
def test_log_barrier_matches_formula(dtype, t):
    zs = [-1000.0, -10.0, -math.e, -1.0 / t**2, -0.5 / t**2, 0.0, 3.0]
    got = log_barrier(torch.tensor(zs, dtype=dtype), t)
    assert got.dtype == dtype
    expected = torch.tensor([_psi(z, t) for z in zs], dtype=dtype)
    torch.testing.assert_close(got, expected)
    assert log_barrier(torch.tensor([-math.e]), 1.0).item() == pytest.approx(-1.0)


def test_log_barrier_is_c1_at_the_switch():
    t = 2.0
    edge = -1 / t**2
    z = torch.tensor([edge - 1e-7, edge + 1e-7], dtype=torch.float64, requires_grad=True)
    value = log_barrier(z, t)
    (grad,) = torch.autograd.grad(value.sum(), z)
    assert abs(value[0] - value[1]) < 1e-6
    assert abs(grad[0] - grad[1]) < 1e-5
    assert grad[1].item() == pytest.approx(t)


def test_log_barrier_gradcheck_both_branches():
    z = torch.tensor([-50.0, -3.0, -0.9, -0.1, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: log_barrier(x, 1.2), (z,))
    t = torch.tensor(1.2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: log_barrier(x, t), (z,))


def test_log_barrier_bad_t():
    for t in (0.0, -1.0, float("nan"), torch.tensor([1.0, 2.0])):
        with pytest.raises(ValueError, match="t"):
            log_barrier(torch.zeros(2), t)
    with pytest.raises(TypeError, match="z"):
        log_barrier(torch.zeros(2, dtype=torch.long), 1.0)


def test_schedule_steps_caps_and_roundtrips():
    s = BarrierSchedule(init_t=1.0, max_t=10.0, mulcoef=1.01)
    for _ in range(50):
        s.step()
    assert s.t == pytest.approx(1.01**50)  # ≈ 1.645 after 50 epochs (method.md §2.3)
    fast = BarrierSchedule(init_t=1.0, max_t=3.0, mulcoef=2.0)
    assert [fast.step() for _ in range(3)] == [2.0, 3.0, 3.0]
    other = BarrierSchedule()
    other.load_state_dict(s.state_dict())
    assert other.t == s.t
    for kwargs in ({"init_t": 0.0}, {"max_t": 0.5}, {"mulcoef": 0.9}):
        with pytest.raises(ValueError):
            BarrierSchedule(**kwargs)


def test_module_state_dict_carries_t_with_weights_only_load():
    loss = SizeLoss()
    for _ in range(3):
        loss.step()
    buf = io.BytesIO()
    torch.save(loss.state_dict(), buf)
    buf.seek(0)
    fresh = SizeLoss()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.t == pytest.approx(1.01**3)
    barrier = LogBarrier(init_t=2.0)
    assert barrier(torch.tensor([-math.e**2])).item() == pytest.approx(-1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_size_loss_hand_value(dtype):
    probs = torch.full((1, 2, 4, 4), 0.5, dtype=dtype)  # both sizes = 8
    torch.testing.assert_close(size_loss(probs, 1.0, weight=0.1),
                               torch.tensor(-0.1 * math.log(8), dtype=dtype))
    # two images, fg sizes 4 and 12, bg 12 and 4: λ · ½ · [mean ψ(−bg) + mean ψ(−fg)]
    fg = torch.zeros(2, 1, 4, 4, dtype=dtype)
    fg[0, 0, :1] = 1.0
    fg[1, 0, :3] = 1.0
    probs = torch.cat([1 - fg, fg], dim=1)
    t = 1.5
    expected = 0.1 * 0.5 * ((_psi(-12, t) + _psi(-4, t)) / 2 + (_psi(-4, t) + _psi(-12, t)) / 2)
    assert SizeLoss(init_t=t)(probs).item() == pytest.approx(expected, rel=1e-6)


def test_size_loss_empty_class_is_finite_and_pushes_it_up():
    logits = torch.full((1, 2, 3, 3), 0.0, requires_grad=True)
    with torch.no_grad():
        logits[:, 1] = -1e4  # foreground probability exactly 0 -> size 0 -> linear branch
    probs = torch.softmax(logits, 1)
    assert probs[:, 1].max().item() == 0.0
    loss = size_loss(probs, 1.0)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_size_loss_gradcheck():
    logits = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: size_loss(torch.softmax(z, 1), 1.3), (logits,))
    probs = torch.full((1, 2, 1, 1), 0.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: size_loss(p, 2.0), (probs,))  # linear branch


def test_size_loss_bad_inputs():
    with pytest.raises(ValueError, match="probs"):
        size_loss(torch.rand(1, 2, 4, 4), 1.0)  # does not sum to 1
    with pytest.raises(ValueError, match="probs"):
        size_loss(torch.ones(1, 1, 4, 4), 1.0)
    with pytest.raises(ValueError, match="probs"):
        size_loss(torch.full((2, 4, 4), 0.5), 1.0)
    with pytest.raises(ValueError, match="weight"):
        SizeLoss(weight=float("inf"))
