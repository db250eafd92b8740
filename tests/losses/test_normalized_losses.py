"""New loss options: the affinity-normalised dense CRF and the min-share size penalty."""

from __future__ import annotations

import pytest
import torch

from fcam.losses import DenseCRFLoss, SizeLoss, dense_crf_loss, size_loss


def _inputs(batch=2, h=5, w=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(batch, 3, h, w, generator=g) * 255).to(dtype)
    logits = (torch.randn(batch, 2, h, w, generator=g) * 2).to(dtype).requires_grad_(True)
    return images, logits


def _dense_affinity(image, sigma_rgb=15.0, sigma_xy=100.0):
    h, w = image.shape[1:]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    f = torch.cat([torch.stack([xs, ys]).reshape(2, -1).to(image) / sigma_xy,
                   image.reshape(3, -1) / sigma_rgb]).T
    return torch.exp(-0.5 * torch.cdist(f, f) ** 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("exact", [True, False])
def test_affinity_normalised_gradcheck(dtype, exact):
    images, logits = _inputs(dtype=dtype)

    def fn(z):
        return dense_crf_loss(images, torch.softmax(z, 1), weight=0.1, exact=exact,
                              normalize="affinity")

    tol = {} if dtype == torch.float64 else {"eps": 1e-3, "atol": 1e-2, "rtol": 1e-2}
    assert torch.autograd.gradcheck(fn, (logits,), **tol)


def test_affinity_normalised_matches_definition():
    images, logits = _inputs(batch=2, h=6, w=5)
    probs = torch.softmax(logits.detach(), 1)
    expected = 0.0
    for b in range(2):
        dense = _dense_affinity(images[b])
        dense = dense * dense.numel() / dense.sum()  # unit mean entry
        s = probs[b].reshape(2, -1)
        expected += sum(s[k] @ dense @ (1 - s[k]) for k in range(2)) / 2
    got = dense_crf_loss(images, probs, weight=1.0, exact=True, normalize="affinity")
    assert got.item() == pytest.approx(float(expected), rel=1e-9)
    fast = dense_crf_loss(images, probs, weight=1.0, normalize="affinity")
    assert fast.item() == pytest.approx(float(expected), rel=0.02)


def test_affinity_normalised_is_invariant_to_affinity_scale():
    """A flat image has W ≈ 1 everywhere; the normalised loss equals the unnormalised one
    for all-ones affinities and no longer depends on how similar the pixels are."""
    probs = torch.softmax(torch.randn(1, 2, 6, 6, dtype=torch.float64), 1)
    flat = torch.full((1, 3, 6, 6), 100.0, dtype=torch.float64)
    plain = dense_crf_loss(flat, probs, weight=1.0, sigma_xy=1e6, exact=True)
    norm = dense_crf_loss(flat, probs, weight=1.0, sigma_xy=1e6, exact=True, normalize="affinity")
    assert norm.item() == pytest.approx(plain.item(), rel=1e-6)
    # Same labelling, a noisier image: the unnormalised loss drops with the affinity mass,
    # the normalised one stays on the same scale.
    noisy = flat + torch.randn(1, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 20
    plain_n = dense_crf_loss(noisy.clamp(0, 255), probs, weight=1.0, sigma_xy=1e6, exact=True)
    norm_n = dense_crf_loss(noisy.clamp(0, 255), probs, weight=1.0, sigma_xy=1e6, exact=True,
                            normalize="affinity")
    assert plain_n.item() < 0.7 * plain.item()
    assert norm_n.item() == pytest.approx(norm.item(), rel=0.3)


def test_crf_module_normalize_option():
    images, logits = _inputs()
    probs = torch.softmax(logits, 1)
    module = DenseCRFLoss(weight=0.5, normalize="affinity")
    assert "affinity" in repr(module)
    assert module(images, probs).item() == pytest.approx(
        dense_crf_loss(images, probs, weight=0.5, normalize="affinity").item())
    module(images, probs).backward()
    assert torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="normalize"):
        DenseCRFLoss(normalize="pairs")
    with pytest.raises(ValueError, match="normalize"):
        dense_crf_loss(images, probs, normalize="ncut")


def test_default_crf_unchanged():
    images, logits = _inputs()
    probs = torch.softmax(logits, 1)
    assert DenseCRFLoss().normalize is None
    assert dense_crf_loss(images, probs, weight=1.0).item() == pytest.approx(
        dense_crf_loss(images, probs, weight=1.0, normalize=None).item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_min_share_gradcheck(dtype):
    # Large shares so that the penalty is active for some images/classes.
    logits = torch.randn(3, 2, 4, 5, dtype=dtype, generator=torch.Generator().manual_seed(2))
    logits[0, 1] -= 3.0  # image 0: almost no foreground
    logits.requires_grad_(True)
    tol = {} if dtype == torch.float64 else {"eps": 1e-3, "atol": 1e-2, "rtol": 1e-2}
    assert torch.autograd.gradcheck(
        lambda z: size_loss(torch.softmax(z, 1), 1.0, weight=1.0, min_share=0.3), (logits,), **tol)


def test_min_share_zero_inside_and_positive_outside():
    probs = torch.zeros(2, 2, 10, 10)
    probs[:, 1, :3] = 1.0  # 30 % foreground
    probs[:, 0] = 1 - probs[:, 1]
    z = probs.clone().requires_grad_(True)
    value = size_loss(z, 1.0, weight=1.0, min_share=0.1)
    value.backward()
    assert value.item() == 0.0 and (z.grad == 0).all()
    # 5 % foreground against a 10 % minimum: ((0.1 - 0.05) / 0.1)² = 0.25 for the fg class.
    probs = torch.zeros(1, 2, 20, 10)
    probs[:, 1, :1] = 1.0
    probs[:, 0] = 1 - probs[:, 1]
    assert size_loss(probs, 1.0, weight=2.0, min_share=0.1).item() == pytest.approx(2.0 * 0.25 / 2)


def test_size_module_min_share_and_default():
    assert SizeLoss().min_share is None
    module = SizeLoss(weight=1.0, min_share=0.05)
    assert "min_share=0.05" in repr(module)
    probs = torch.softmax(torch.randn(2, 2, 8, 8), 1)
    assert module(probs).item() == pytest.approx(size_loss(probs, 1.0, 1.0, min_share=0.05).item())
    for bad in (0.0, 0.6, -1.0):
        with pytest.raises(ValueError, match="min_share"):
            SizeLoss(min_share=bad)
