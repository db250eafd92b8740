"""Golden values: every method on ToyNet, expected maps derived by hand.

ToyNet (conftest): A = x, y_c = sum_k FC[c][k] * mean(A_k^2) with FC = [[1, .5], [-1, 1]],
so g_k = dy_c/dA_k = (2/9) FC[c][k] A_k. With A0 = diag(1, 2, 1) and A1 = 2 on (0,1),(1,1):
S_0 = S_1 = 4, sum A0^2 = 6, sum A1^2 = 8, y = (10/9, 2/9) so argmax is class 0.
"""

from __future__ import annotations

import math

import pytest
import torch
from cams_toy import A0, A1, FC, ToyNet
from torch import Tensor

from fcam import cams

A = torch.tensor([A0, A1], dtype=torch.float64)


def grid(rows: list[list[float]], scale: float = 1.0) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64)[None] * scale


def close(actual: Tensor, expected: Tensor) -> None:
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=1e-6, atol=1e-7)


def test_cam(toy: ToyNet, toy_input: Tensor) -> None:
    # class 0: relu(A0 + 0.5 A1); class 1: relu(-A0 + A1)
    with cams.CAM(toy, "features") as cam:
        close(cam(toy_input, 0), grid([[1, 1, 0], [0, 3, 0], [0, 0, 1]]))
        close(cam(toy_input, 1), grid([[0, 2, 0], [0, 0, 0], [0, 0, 0]]))


def test_gradcam(toy: ToyNet, toy_input: Tensor) -> None:
    # class 0: w = mean(g) = (2/9 * 4/9, 1/9 * 4/9) = (8/81, 4/81) -> (8 A0 + 4 A1) / 81
    # class 1: w = (-8/81, 8/81) -> relu(8 A1 - 8 A0) / 81
    with cams.GradCAM(toy, "features") as cam:
        close(cam(toy_input, 0), grid([[8, 8, 0], [0, 24, 0], [0, 0, 8]], 1 / 81))
        close(cam(toy_input, 1), grid([[0, 16, 0], [0, 0, 0], [0, 0, 0]], 1 / 81))
        # targets=None picks the argmax (class 0); a mixed batch gives one map per target
        close(cam(toy_input), grid([[8, 8, 0], [0, 24, 0], [0, 0, 8]], 1 / 81))
        both = cam(toy_input.repeat(2, 1, 1, 1), torch.tensor([1, 0]))
        close(both[1:], grid([[8, 8, 0], [0, 24, 0], [0, 0, 8]], 1 / 81))
        close(both[:1], grid([[0, 16, 0], [0, 0, 0], [0, 0, 0]], 1 / 81))


# Grad-CAM++ with eps = 0: alpha = g^2 / (2 g^2 + S g^3) = 1 / (2 + S g) where g != 0.
# Channel 0: g = 2a/9 on a in {1, 2, 1}, S = 4: relu(g) alpha = a / (9 + 4a) -> w0 = 2/13 + 2/17 = 60/221.
# Channel 1: g = a/9 on a in {2, 2}, S = 4: relu(g) alpha = a / (18 + 4a) = 1/13 twice -> w1 = 34/221.
GRADCAMPP_CLASS0 = grid([[60, 68, 0], [0, 188, 0], [0, 0, 60]], 1 / 221)


def test_gradcampp(toy: ToyNet, toy_input: Tensor) -> None:
    with cams.GradCAMpp(toy, "features", eps=0.0) as cam:
        close(cam(toy_input, 0), GRADCAMPP_CLASS0)


def test_gradcampp_zero_denominator_guard() -> None:
    # Linear head on the flattened map: g_0 = 0.5 everywhere, g_1 = 1/9 everywhere.
    # A_0 = -4/9 everywhere (S_0 = -4): 2 g^2 + S g^3 = 0.5 - 0.5 = 0 -> alpha forced to 0.
    # A_1 = 1 everywhere (S_1 = 9): alpha = 1 / (2 + 9/9) = 1/3, w_1 = 9 * (1/9)(1/3) = 1/3.
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Flatten(), torch.nn.Linear(18, 1, bias=False))
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[0.5] * 9 + [1 / 9] * 9]))
    x = torch.stack([torch.full((3, 3), -4 / 9), torch.ones(3, 3)])[None]
    out = cams.GradCAMpp(model, "0", eps=0.0)(x, 0)
    torch.testing.assert_close(out, torch.full((1, 3, 3), 1 / 3))


def test_smoothgradcampp_without_noise_is_gradcampp(toy: ToyNet, toy_input: Tensor) -> None:
    cam = cams.SmoothGradCAMpp(toy, "features", num_samples=3, std=0.0, eps=0.0, seed=0)
    close(cam(toy_input, 0), GRADCAMPP_CLASS0)


def test_smoothgradcampp_seeded(toy: ToyNet, toy_input: Tensor) -> None:
    # Noisy copies x_n = x + std * delta_n with delta_n ~ N(0, 1) drawn from Generator(seed):
    # A^(n) = x_n, g^(n)_k = 2/9 FC[0][k] relu(A^(n)_k) (ToyNet's ReLU now sees negative
    # values); the alpha/weights use the averaged
    # moments and the clean activations (see the SmoothGradCAMpp docstring).
    std, samples, eps = 0.4, 2, 1e-6
    gen = torch.Generator().manual_seed(7)
    noisy = [A + std * torch.randn((1, 2, 3, 3), generator=gen, dtype=torch.float64)[0] for _ in range(samples)]
    coef = torch.tensor([2 / 9 * FC[0][0], 2 / 9 * FC[0][1]], dtype=torch.float64)[:, None, None]
    grads = [coef * a.clamp_min(0) for a in noisy]
    m1 = sum(grads) / samples
    m2 = sum(g**2 for g in grads) / samples
    m3 = sum(g**3 for g in grads) / samples
    total = A.sum(dim=(1, 2), keepdim=True)
    alpha = m2 / (2 * m2 + total * m3 + eps)
    weights = (alpha * m1.clamp_min(0)).sum(dim=(1, 2))
    expected = (weights[:, None, None] * A).sum(0).clamp_min(0)[None]
    cam = cams.SmoothGradCAMpp(toy, "features", num_samples=samples, std=std, seed=7)
    close(cam(toy_input, 0), expected)
    close(cam(toy_input, 0), expected)  # same seed, same map on every call


def test_xgradcam(toy: ToyNet, toy_input: Tensor) -> None:
    # w_k = sum(g A) / S_k: (2/9 * 6/4, 1/9 * 8/4) = (1/3, 2/9) -> (3 A0 + 2 A1) / 9
    with cams.XGradCAM(toy, "features", eps=0.0) as cam:
        close(cam(toy_input, 0), grid([[3, 4, 0], [0, 10, 0], [0, 0, 3]], 1 / 9))


def test_layercam(toy: ToyNet, toy_input: Tensor) -> None:
    # sum_k relu(g_k) A_k = (2 A0^2 + A1^2) / 9
    with cams.LayerCAM(toy, "features") as cam:
        close(cam(toy_input, 0), grid([[2, 4, 0], [0, 12, 0], [0, 0, 2]], 1 / 9))


# Score-CAM: masks M_k = A_k / 2; masked input x * M_k gives activations A_j * M_k, so
# y_0(M_0) = (sum (A0 M0)^2 + .5 sum (A1 M0)^2) / 9 = (4.5 + .5 * 4) / 9 = 6.5/9
# y_0(M_1) = (sum (A0 M1)^2 + .5 sum (A1 M1)^2) / 9 = (4 + .5 * 8) / 9 = 8/9
SCORES_CLASS0 = (6.5 / 9, 8 / 9)


def softmax_map(scores: tuple[float, float]) -> Tensor:
    w0 = 1 / (1 + math.exp(scores[1] - scores[0]))
    return (w0 * A[0] + (1 - w0) * A[1])[None]


@pytest.mark.parametrize("batch_size", [1, 32])
def test_scorecam(toy: ToyNet, toy_input: Tensor, batch_size: int) -> None:
    with cams.ScoreCAM(toy, "features", batch_size=batch_size) as cam:
        close(cam(toy_input, 0), softmax_map(SCORES_CLASS0))


def test_iscam(toy: ToyNet, toy_input: Tensor) -> None:
    # N = 2: c_1 = 1/2, c_2 = 1/2 + 1 = 3/2; the head is quadratic, so
    # y(x * c M) = c^2 y(x * M) and the mean score is (1/4 + 9/4) / 2 = 1.25 times Score-CAM's.
    with cams.ISCAM(toy, "features", num_samples=2) as cam:
        close(cam(toy_input, 0), softmax_map((1.25 * SCORES_CLASS0[0], 1.25 * SCORES_CLASS0[1])))


def test_sscam_seeded(toy: ToyNet, toy_input: Tensor) -> None:
    # Noise delta_{n,k} (one 3x3 field per channel mask, drawn sample by sample from
    # Generator(seed)); score = mean_n y_0(x * (M_k + std delta_{n,k})).
    std, samples = 0.5, 3
    gen = torch.Generator().manual_seed(3)
    masks = A / 2
    totals = torch.zeros(2, dtype=torch.float64)
    for _ in range(samples):
        noise = torch.randn((2, 1, 3, 3), generator=gen, dtype=torch.float64)[:, 0]
        for k in range(2):
            m = masks[k] + std * noise[k]
            # ToyNet's ReLU clips the masked activations A_j * m that the noise made negative
            masked = (A * m).clamp_min(0)
            totals[k] += (FC[0][0] * (masked[0] ** 2).sum() + FC[0][1] * (masked[1] ** 2).sum()) / 9
    mean = totals / samples
    expected = softmax_map((float(mean[0]), float(mean[1])))
    with cams.SSCAM(toy, "features", num_samples=samples, std=std, seed=3) as cam:
        close(cam(toy_input, 0), expected)
    # without noise SS-CAM is Score-CAM
    close(cams.SSCAM(toy, "features", num_samples=2, std=0.0)(toy_input, 0), softmax_map(SCORES_CLASS0))


@pytest.mark.parametrize("name", cams.available()[:9])  # tscam needs a class token: test_tscam.py
def test_explain_is_normalised_upsampled_raw_map(name: str, toy: ToyNet, toy_input: Tensor) -> None:
    extractor = cams.create(name, toy, "features", **({"seed": 0} if name in ("smoothgradcampp", "sscam") else {}))
    raw = extractor(toy_input, 0)
    maps = extractor.explain(toy_input, 0, size=(6, 6))
    assert maps.shape == (1, 6, 6)
    expected = cams.normalize(torch.nn.functional.interpolate(raw[:, None], size=(6, 6), mode="bilinear")[:, 0])
    torch.testing.assert_close(maps, expected)
    assert float(maps.min()) == 0.0 and float(maps.max()) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["scorecam", "iscam"])
def test_constant_channel_is_scored_once(name: str, toy: ToyNet, toy_input: Tensor) -> None:
    # A1 = 0 is spatially constant: its mask is 0, x * 0 = 0 and y_0(0) = 0 (no bias).
    # y_0(x * M_0) = sum (A0 A0/2)^2 / 9 = 4.5/9 = 0.5 (IS-CAM with N = 2: 1.25 * 0.5).
    x = toy_input.clone()
    x[:, 1] = 0
    calls: list[int] = []
    toy.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    options = {"num_samples": 2} if name == "iscam" else {}
    score = 0.5 * (1.25 if name == "iscam" else 1.0)
    w0 = 1 / (1 + math.exp(-score))
    close(cams.create(name, toy, "features", **options)(x, 0), w0 * A[:1])
    # capture pass, one pass on the blank input, then only the live channel per sample
    assert calls == [1, 1] + [1] * options.get("num_samples", 1)
