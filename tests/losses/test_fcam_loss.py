"""FCAMLoss composes the three terms."""

from __future__ import annotations

import io

import pytest
import torch

from fcam.losses import DenseCRFLoss, FCAMLoss, SeedLoss, SizeLoss, sample_seeds


def _batch(seed=0, size=12):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 2, size, size, generator=g, requires_grad=True)
    images = torch.rand(2, 3, size, size, generator=g) * 255
    cams = torch.rand(2, size, size, generator=g)
    seeds = sample_seeds(cams, fg_erode_k=3, generator=g)
    return logits, seeds, images


def test_total_is_weighted_sum_of_parts():
    logits, seeds, images = _batch()
    loss = FCAMLoss(crf=DenseCRFLoss(weight=1e-4, exact=True), seed_weight=2.0)
    total, parts = loss(logits, seeds, images)
    assert set(parts) == {"seed", "crf", "size"}
    probs = torch.softmax(logits, 1)
    torch.testing.assert_close(parts["seed"], SeedLoss()(logits, seeds))
    torch.testing.assert_close(parts["crf"], DenseCRFLoss(weight=1e-4, exact=True)(images, probs))
    torch.testing.assert_close(parts["size"], SizeLoss()(probs))
    torch.testing.assert_close(total, 2.0 * parts["seed"] + parts["crf"] + parts["size"])
    (grad,) = torch.autograd.grad(total, logits)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_no_seeds_still_finite():
    logits, _, images = _batch(1)
    total, parts = FCAMLoss()(logits, torch.full((2, 12, 12), -255), images)
    assert parts["seed"].item() == 0.0 and torch.isfinite(total)


def test_step_and_state_dict_carry_barrier_t():
    loss = FCAMLoss()
    assert loss.step() == pytest.approx(1.01)
    buf = io.BytesIO()
    torch.save(loss.state_dict(), buf)
    buf.seek(0)
    fresh = FCAMLoss()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.size.t == pytest.approx(1.01)


def test_bad_inputs():
    logits, seeds, images = _batch()
    with pytest.raises(ValueError, match="images"):
        FCAMLoss()(logits, seeds, images / 255 - 0.5)
    with pytest.raises(ValueError, match="seeds"):
        FCAMLoss()(logits, seeds[:, :5], images)
    with pytest.raises(ValueError, match="seed_weight"):
        FCAMLoss(seed_weight=float("nan"))
