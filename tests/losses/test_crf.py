"""Dense-CRF loss: exact path vs a naive dense-W formula, fast paths vs exact, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from skimage import data

import fcam.losses.crf as crf_module
from fcam.losses import DenseCRFLoss, dense_crf_loss
from fcam.losses.bilateral import (
    _blur_first_axis,
    _grid_filter_once,
    _sparse_grid_filter,
    exact_gaussian_filter,
    grid_gaussian_filter,
    lowrank_gaussian_filter,
    spatial_basis,
    spatial_rank,
    window_gaussian_filter,
)


def _naive_loss(images, probs, sigma_rgb, sigma_xy, weight):
    """Literal definition: weight/B Σ_b Σ_k S_kᵀ W (1 − S_k) with a dense W."""
    batch, classes, h, w = probs.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    total = 0.0
    for b in range(batch):
        f = torch.cat([
            torch.stack([xs, ys]).reshape(2, -1).to(probs) / sigma_xy,
            images[b].reshape(3, -1).to(probs) / sigma_rgb,
        ]).T
        dense = torch.exp(-0.5 * torch.cdist(f, f) ** 2)
        s = probs[b].reshape(classes, -1)
        total = total + sum(s[k] @ dense @ (1 - s[k]) for k in range(classes))
    return weight * total / batch


def _inputs(batch, h, w, classes=2, seed=0, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(batch, 3, h, w, generator=g) * 255).to(dtype)
    logits = (torch.randn(batch, classes, h, w, generator=g) * 2).to(dtype)
    logits.requires_grad_(requires_grad)
    return images, logits


# --- test images for the accuracy bar -------------------------------------------------------

def _natural(name, n):
    im = torch.tensor(getattr(data, name)()[..., :3], dtype=torch.float64).permute(2, 0, 1)[None]
    return F.interpolate(im, size=(n, n), mode="area").clamp(0, 255)


def _edges(n, seed):
    """Four flat, random colours separated by sharp straight edges."""
    colours = torch.rand(4, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    label = (xs > n // 3).long() + 2 * (ys + xs // 2 > n // 2).long()
    return (colours[label] * 255).permute(2, 0, 1)[None].contiguous()


def _field(n, seed):
    low = torch.randn(1, 3, n // 8, n // 8, generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)
    z = F.interpolate(low, size=(n, n), mode="bicubic", align_corners=False)
    return (z - z.min()) / (z.max() - z.min()) * 255


def _logits(n, smooth, seed):
    g = torch.Generator().manual_seed(seed)
    if smooth:
        low = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64) * 3
        return F.interpolate(low, size=(n, n), mode="bilinear", align_corners=False)
    return torch.randn(1, 2, n, n, generator=g, dtype=torch.float64) * 2


IMAGES = {
    "astronaut": lambda n: _natural("astronaut", n),
    "coffee": lambda n: _natural("coffee", n),
    "edges0": lambda n: _edges(n, 0),
    "edges2": lambda n: _edges(n, 2),
    "field": lambda n: _field(n, 1),
}


def _loss_and_logit_grad(images, logits, sigma_xy, exact):
    logits = logits.clone().requires_grad_(True)
    loss = dense_crf_loss(images, torch.softmax(logits, 1), sigma_xy=sigma_xy, weight=1.0,
                          exact=exact)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.item(), grad.flatten()


def _check_accuracy(n, sigmas=(100.0, 5.0)):
    for name, make in IMAGES.items():
        images = make(n).float()
        for smooth in (False, True):
            logits = _logits(n, smooth, seed=n).float()
            for sigma_xy in sigmas:
                ref, ref_grad = _loss_and_logit_grad(images, logits, sigma_xy, exact=True)
                fast, fast_grad = _loss_and_logit_grad(images, logits, sigma_xy, exact=False)
                rel = abs(fast / ref - 1)
                cos = F.cosine_similarity(fast_grad.double(), ref_grad.double(), dim=0).item()
                case = f"{name} smooth={smooth} sigma_xy={sigma_xy}: rel={rel:.4f} cos={cos:.5f}"
                assert rel <= 0.01, case
                assert cos >= 0.99, case


def test_accuracy_bar_48():
    _check_accuracy(48)


@pytest.mark.slow
def test_accuracy_bar_64():
    _check_accuracy(64)


@pytest.mark.slow
def test_accuracy_bar_48_grid_only(monkeypatch):
    """The 5-D grid (the path for large images) meets the bar at σ_xy = 100 too."""
    monkeypatch.setattr(crf_module, "_LOWRANK_MAX_RANK", 0)
    _check_accuracy(48)


@pytest.mark.parametrize("n", [48, pytest.param(64, marks=pytest.mark.slow)])
def test_accuracy_bar_lowrank_at_default_image_to_sigma_ratio(n):
    """224² at σ_xy = 100 (the default) is the low-rank path at rank 8: the same image-size to
    bandwidth ratio (and so the same rank) at a size the exact oracle can afford."""
    sigma_xy = n * 100.0 / 224.0
    assert spatial_rank(n, n, sigma_xy, crf_module._LOWRANK_TOL) == spatial_rank(
        224, 224, 100.0, crf_module._LOWRANK_TOL) == 8
    _check_accuracy(n, sigmas=(sigma_xy,))


def test_path_selection(monkeypatch):
    """Low rank while R <= 32 (224² and 448² at σ_xy = 100), the 5-D grid beyond (896²)."""
    assert spatial_rank(224, 224, 100.0) == 8
    assert spatial_rank(448, 448, 100.0) <= crf_module._LOWRANK_MAX_RANK
    assert spatial_rank(896, 896, 100.0) > crf_module._LOWRANK_MAX_RANK
    calls = []
    real = crf_module.lowrank_gaussian_filter
    monkeypatch.setattr(crf_module, "lowrank_gaussian_filter",
                        lambda *a: calls.append("lowrank") or real(*a))
    monkeypatch.setattr(crf_module, "spatial_rank", lambda h, w, s, t: {20: 10, 21: 33}[h])
    for size in (20, 21):
        images, logits = _inputs(1, size, size, dtype=torch.float32)
        dense_crf_loss(images, torch.softmax(logits, 1))
    assert calls == ["lowrank"]
    # Devices without sparse CSR products (e.g. MPS) take the grid whatever the rank.
    monkeypatch.setattr(crf_module, "_SPARSE_DEVICES", ())
    images, logits = _inputs(1, 20, 20, dtype=torch.float32)
    dense_crf_loss(images, torch.softmax(logits, 1))
    assert calls == ["lowrank"]


@pytest.mark.slow
def test_accuracy_bar_48_grid_at_small_sigma(monkeypatch):
    """The grid alone (window path off) also meets the bar at σ_xy = 5."""
    monkeypatch.setattr(crf_module, "_WINDOW_MAX_SIGMA_XY", 0.0)
    _check_accuracy(48)


# --- exact path -----------------------------------------------------------------------------

@pytest.mark.parametrize(("h", "w", "classes", "sigma_rgb", "sigma_xy"),
                         [(5, 7, 2, 15.0, 100.0), (6, 4, 3, 30.0, 2.0), (1, 9, 2, 10.0, 1.5)])
def test_exact_matches_naive_dense_formula(h, w, classes, sigma_rgb, sigma_xy):
    images, logits = _inputs(2, h, w, classes)
    probs = torch.softmax(logits, 1)
    got = dense_crf_loss(images, probs, sigma_rgb, sigma_xy, weight=3.0, exact=True)
    expected = _naive_loss(images, probs, sigma_rgb, sigma_xy, 3.0)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)


def test_hand_computed_values():
    # 1 pixel: W = [1], loss = Σ_k s_k (1 − s_k)
    probs = torch.tensor([0.3, 0.7], dtype=torch.float64).view(1, 2, 1, 1)
    image = torch.full((1, 3, 1, 1), 100.0, dtype=torch.float64)
    for exact in (True, False):
        assert dense_crf_loss(image, probs, weight=1.0, exact=exact).item() == pytest.approx(0.42)
    # 2 pixels one column apart, same colour, one-hot opposite labels:
    # W = [[1, a], [a, 1]], a = exp(−½ / σ_xy²); loss = 2a
    image = torch.full((1, 3, 1, 2), 50.0, dtype=torch.float64)
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64).view(1, 2, 1, 2)
    a = math.exp(-0.5 / 4.0)
    got = dense_crf_loss(image, probs, sigma_xy=2.0, weight=1.0, exact=True).item()
    assert got == pytest.approx(2 * a, rel=1e-12)
    fast = dense_crf_loss(image, probs, sigma_xy=10.0, weight=1.0).item()  # grid path
    assert fast == pytest.approx(2 * math.exp(-0.5 / 100.0), rel=0.01)


def test_logit_gradient_equals_original_codes():
    """Original code: value −λ/B Σ_k S_kᵀ W S_k (gradient −2λ/B · W S_k w.r.t. S)."""
    images, logits = _inputs(2, 5, 6, requires_grad=True)
    probs = torch.softmax(logits, 1)
    ours = dense_crf_loss(images, probs, sigma_xy=3.0, weight=1.0, exact=True)
    (g_ours,) = torch.autograd.grad(ours, logits)
    probs = torch.softmax(logits, 1)
    original = 0.0
    for b in range(2):
        ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
        features = torch.cat([torch.stack([xs, ys]).reshape(2, -1).double() / 3.0,
                              images[b].reshape(3, -1) / 15.0]).T
        dense = torch.exp(-0.5 * torch.cdist(features, features) ** 2)
        s = probs[b].reshape(2, -1)
        original = original - sum(s[k] @ dense @ s[k] for k in range(2)) / 2
    (g_orig,) = torch.autograd.grad(original, logits)
    torch.testing.assert_close(g_ours, g_orig)


def test_scale_downsamples_like_the_original():
    images, logits = _inputs(1, 8, 10)
    probs = torch.softmax(logits, 1)
    got = dense_crf_loss(images, probs, sigma_xy=4.0, weight=1.0, scale=0.5, exact=True)
    small_img = F.interpolate(images, scale_factor=0.5, mode="nearest")
    small_p = F.interpolate(probs, scale_factor=0.5, mode="bilinear", align_corners=False)
    expected = _naive_loss(small_img, small_p, 15.0, 2.0, 1.0)
    torch.testing.assert_close(got, expected)


# --- fast paths -----------------------------------------------------------------------------

def test_window_filter_matches_exact_within_radius():
    images, logits = _inputs(2, 9, 13)
    values = torch.softmax(logits, 1)
    feats = images / 20.0
    sigma = 1.5
    got = window_gaussian_filter(feats, values, sigma, radius=20)  # window covers the image
    ys, xs = torch.meshgrid(torch.arange(9.0), torch.arange(13.0), indexing="ij")
    f = torch.cat([torch.stack([xs, ys]).reshape(1, 2, -1).expand(2, -1, -1).double() / sigma,
                   feats.reshape(2, 3, -1)], 1).transpose(1, 2)
    expected = exact_gaussian_filter(f, values.reshape(2, 2, -1).transpose(1, 2), chunk=7)
    torch.testing.assert_close(got, expected.transpose(1, 2).reshape(values.shape))


def test_grid_filter_close_to_exact_on_random_points():
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(2, 400, 5, generator=g, dtype=torch.float64) * 4
    values = torch.rand(2, 400, 3, generator=g, dtype=torch.float64)
    exact = exact_gaussian_filter(feats, values)
    approx = grid_gaussian_filter(feats, values, spacing=0.6, shifts=4)
    assert ((approx - exact).abs() / exact).max() < 0.03
    assert abs(approx.sum() / exact.sum() - 1) < 0.005
    coarse = grid_gaussian_filter(feats, values, spacing=1.2, shifts=1)
    assert abs(coarse.sum() / exact.sum() - 1) > abs(approx.sum() / exact.sum() - 1)


def test_grid_filter_long_axes_and_nearest_axes():
    g = torch.Generator().manual_seed(1)
    # A 60σ-long axis (120 cells at spacing 0.5) takes the truncated shifted-slice blur.
    feats = torch.rand(1, 600, 3, generator=g, dtype=torch.float64) * torch.tensor([60.0, 3, 3])
    values = torch.rand(1, 600, 2, generator=g, dtype=torch.float64)
    exact = exact_gaussian_filter(feats, values)
    approx = grid_gaussian_filter(feats, values, spacing=0.5)
    assert ((approx - exact).abs() / exact).max() < 0.1  # per point: a few % per axis
    assert abs(approx.sum() / exact.sum() - 1) < 0.005
    near = grid_gaussian_filter(feats, values, spacing=(0.5, 0.2, 0.2), nearest=(False, True, True))
    assert abs(near.sum() / exact.sum() - 1) < 0.01


def test_shared_grid_equals_one_grid_per_set():
    g = torch.Generator().manual_seed(2)
    extent = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64).view(3, 1, 1)
    feats = torch.rand(3, 50, 5, generator=g, dtype=torch.float64) * extent
    values = torch.rand(3, 50, 2, generator=g, dtype=torch.float64)
    spacing = torch.full((5,), 0.5, dtype=torch.float64)
    nearest = torch.zeros(5, dtype=torch.bool)
    var = 1 - spacing**2 / 3
    shared = _grid_filter_once(feats, values, spacing, var, nearest, 0.25)
    for b in range(3):
        alone = _grid_filter_once(feats[b:b + 1], values[b:b + 1], spacing, var, nearest, 0.25)
        torch.testing.assert_close(shared[b:b + 1], alone)


@pytest.mark.parametrize(("height", "width", "sigma"), [(9, 13, 6.0), (1, 7, 3.0), (16, 16, 40.0)])
def test_spatial_basis_reproduces_the_spatial_kernel(height, width, sigma):
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pix = torch.stack((xs, ys), -1).reshape(-1, 2).double()
    kernel = torch.exp(-0.5 * torch.cdist(pix, pix) ** 2 / sigma**2)
    basis = spatial_basis(height, width, sigma, tol=1e-12, dtype=torch.float64)
    torch.testing.assert_close(basis @ basis.T, kernel, rtol=0, atol=1e-9)
    truncated = spatial_basis(height, width, sigma, tol=1e-2, dtype=torch.float64)
    assert truncated.shape[1] == spatial_rank(height, width, sigma, tol=1e-2) < basis.shape[1]
    # The residual K − ΦΦᵀ is positive semi-definite: its largest entry is on the diagonal,
    # bounded by its trace, the dropped eigenvalue mass.
    dropped = height * width - truncated.pow(2).sum()
    assert (kernel - truncated @ truncated.T).abs().max() <= dropped + 1e-9
    assert 0 < dropped < 0.1 * height * width


def test_sparse_grid_filter_equals_grid_filter():
    """Same approximation, other bookkeeping (sparse products): equal to rounding."""
    g = torch.Generator().manual_seed(3)
    feats = torch.rand(300, 3, generator=g, dtype=torch.float64) * torch.tensor([9.0, 3, 1])
    values = torch.rand(300, 7, generator=g, dtype=torch.float64)
    expected = grid_gaussian_filter(feats[None], values[None], spacing=0.5)[0]
    torch.testing.assert_close(_sparse_grid_filter(feats.T.contiguous(), values, 0.5), expected)


def test_lowrank_filter_close_to_exact():
    g = torch.Generator().manual_seed(4)
    height, width, sigma_xy = 12, 10, 8.0
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coords = torch.stack((xs, ys), -1).reshape(1, -1, 2).double().expand(2, -1, -1) / sigma_xy
    colours = torch.rand(2, height * width, 3, generator=g, dtype=torch.float64) * 3
    values = torch.rand(2, height * width, 2, generator=g, dtype=torch.float64)
    exact = exact_gaussian_filter(torch.cat((coords, colours), -1), values)
    basis = spatial_basis(height, width, sigma_xy, tol=1e-6, dtype=torch.float64)
    approx = lowrank_gaussian_filter(colours, values, basis)
    assert ((approx - exact).abs() / exact).max() < 0.05  # per point: a few % per colour axis
    assert abs(approx.sum() / exact.sum() - 1) < 0.005


def test_truncated_blur_equals_dense_blur():
    grid = torch.rand(200, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spacing, var = 0.5, 1 - 0.25 / 3
    steps = torch.arange(200, dtype=torch.float64) * spacing
    dense = torch.exp(-0.5 * (steps[:, None] - steps[None, :]) ** 2 / var) / math.sqrt(var)
    expected = torch.tensordot(grid, dense, dims=([0], [0]))
    got = _blur_first_axis(grid, spacing, var)  # 200 cells: the shifted-slice branch
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)
    short = grid[:20]
    torch.testing.assert_close(_blur_first_axis(short, spacing, var),
                               torch.tensordot(short, dense[:20, :20], dims=([0], [0])))


@pytest.mark.parametrize("sigma_xy", [100.0, 2.0])
def test_gradcheck(sigma_xy):
    images, logits = _inputs(2, 3, 4, requires_grad=True)
    for exact in (True, False):
        def fn(z, exact=exact):
            return dense_crf_loss(images, torch.softmax(z, 1), sigma_xy=sigma_xy, weight=0.1,
                                  exact=exact)
        assert torch.autograd.gradcheck(fn, (logits,))
    probs = torch.softmax(logits.detach(), 1).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p: dense_crf_loss(images, p, sigma_xy=sigma_xy, weight=0.1), (probs,))


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (3, 1), (11, 17)])
@pytest.mark.parametrize("sigma_xy", [100.0, 3.0])
def test_fast_matches_exact_on_edge_shapes_float32(shape, sigma_xy):
    images, logits = _inputs(2, *shape, dtype=torch.float32, seed=3)
    probs = torch.softmax(logits, 1)
    exact = dense_crf_loss(images, probs, sigma_xy=sigma_xy, weight=1.0, exact=True)
    fast = dense_crf_loss(images, probs, sigma_xy=sigma_xy, weight=1.0)
    assert fast.dtype == torch.float32
    assert fast.item() == pytest.approx(exact.item(), rel=0.01)


def test_float32_and_float64_agree():
    images, logits = _inputs(2, 16, 16)
    probs = torch.softmax(logits, 1)
    for sigma_xy in (100.0, 5.0):
        f64 = dense_crf_loss(images, probs, sigma_xy=sigma_xy, weight=1.0)
        f32 = dense_crf_loss(images.float(), probs.float(), sigma_xy=sigma_xy, weight=1.0)
        assert f32.item() == pytest.approx(f64.item(), rel=1e-4)


def test_one_hot_and_constant_inputs():
    images = torch.full((2, 3, 40, 40), 128.0)
    images[1] = 3.0
    one_hot = torch.zeros(2, 2, 40, 40)
    one_hot[:, 0] = 1.0
    for exact in (True, False):
        assert dense_crf_loss(images, one_hot, exact=exact).item() == 0.0  # one label: no cut
    one_hot[:, :, :, 17:] = one_hot[:, :, :, 17:].flip(1)
    logits = (one_hot * 1e4).requires_grad_(True)
    probs = torch.softmax(logits, 1)
    loss = dense_crf_loss(images, probs, weight=1.0)
    (grad,) = torch.autograd.grad(loss, logits)
    assert loss.item() > 0 and torch.isfinite(grad).all()
    exact = dense_crf_loss(images, probs.detach(), weight=1.0, exact=True)
    assert loss.item() == pytest.approx(exact.item(), rel=0.01)


def test_module_defaults_and_repr():
    crf = DenseCRFLoss()
    assert (crf.sigma_rgb, crf.sigma_xy, crf.weight, crf.scale, crf.exact) == (
        15.0, 100.0, 1e-9, 1.0, False)
    assert "sigma_xy=100.0" in repr(crf)
    images, logits = _inputs(1, 6, 6)
    probs = torch.softmax(logits, 1)
    assert crf(images, probs).item() == pytest.approx(
        dense_crf_loss(images, probs, weight=1e-9).item(), rel=1e-12)


# --- bad input ------------------------------------------------------------------------------

def test_bad_inputs():
    images, logits = _inputs(2, 6, 6)
    probs = torch.softmax(logits, 1)
    cases = [
        ((images[..., :5], probs), "images .* probs"),
        ((images[:1], probs), "images .* probs"),
        ((images, probs * 1.1), "probs"),
        ((images, torch.ones(2, 1, 6, 6, dtype=torch.float64)), "probs"),
        ((images / 255 - 0.5, probs), "images"),
        ((images * 2, probs), "images"),
        ((images[:, :2], probs), "images"),
        ((images[0], probs), "images"),
        ((images, probs[0]), "probs"),
        ((images, logits), "probs"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            dense_crf_loss(*args)
    with pytest.raises(TypeError, match="images"):
        dense_crf_loss(images.long(), probs)
    with pytest.raises(TypeError, match="probs"):
        dense_crf_loss(images, probs.numpy())
    bad = ({"sigma_rgb": 0.0}, {"sigma_xy": -1.0}, {"scale": 1.5}, {"weight": float("nan")})
    for kwargs in bad:
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            dense_crf_loss(images, probs, **kwargs)
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            DenseCRFLoss(**kwargs)


def test_device_matches_cpu(device: torch.device):
    images, logits = _inputs(2, 32, 32, dtype=torch.float32)
    logits = logits.to(device).requires_grad_(True)
    for sigma_xy in (100.0, 5.0):
        cpu = dense_crf_loss(images, torch.softmax(logits.detach().cpu(), 1), sigma_xy=sigma_xy)
        gpu = dense_crf_loss(images.to(device), torch.softmax(logits, 1), sigma_xy=sigma_xy)
        assert gpu.device.type == device.type
        assert gpu.item() == pytest.approx(cpu.item(), rel=1e-4)
        (grad,) = torch.autograd.grad(gpu, logits)
        assert torch.isfinite(grad).all()
