"""Seed sampling vs a straightforward per-image numpy/scikit-image reference, and SeedLoss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.filters import threshold_otsu

from fcam.losses import SeedLoss, otsu_threshold, sample_seeds, seed_loss

IGNORE = -255


def _random_cams(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Smooth blobs (bilinear upsampled noise), min-max normalised like real CAMs."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 1, 5, 5, generator=g) ** 3
    cams = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    lo = cams.amin(dim=(1, 2), keepdim=True)
    hi = cams.amax(dim=(1, 2), keepdim=True)
    return (cams - lo) / (hi - lo)


def _np_erode(mask: np.ndarray, k: int) -> np.ndarray:
    """Binary erosion by a k x k square; pixels outside the image are ignored (geodesic)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            y0, y1 = max(0, y - k // 2), min(h, y - k // 2 + k)
            x0, x1 = max(0, x - k // 2), min(w, x - k // 2 + k)
            out[y, x] = mask[y0:y1, x0:x1].all()
    return out


def _reference_all_candidates(cam: np.ndarray, min_p: float, erode_k: int, erode_iter: int):
    """method.md §2.1 with every candidate drawn (sl_max = sl_min = all, ksz = 1)."""
    img8 = np.floor(cam * 255).astype(np.uint8)
    seeds = np.full(cam.shape, IGNORE, dtype=np.int64)
    if img8.min() == img8.max():
        return seeds
    tau = int(threshold_otsu(img8))
    tau = 1 if tau == 0 else (254 if tau == 255 else tau)
    roi = img8 > tau
    for _ in range(erode_iter):
        eroded = _np_erode(roi, erode_k)
        if not eroded.any():
            break
        roi = eroded
    n_bg = int(min_p * cam.size)
    bg = np.zeros(cam.size, dtype=bool)
    bg[np.argsort(cam.reshape(-1), kind="stable")[:n_bg]] = True
    bg = bg.reshape(cam.shape)
    seeds[roi & ~bg] = 1
    seeds[bg & ~roi] = 0
    return seeds


@pytest.mark.parametrize("seed", range(4))
def test_otsu_matches_skimage(seed):
    rng = np.random.default_rng(seed)
    images = [
        rng.integers(0, 256, size=300),
        np.concatenate([rng.normal(60, 10, 200), rng.normal(180, 25, 100)]).clip(0, 255),
        rng.integers(40, 43, size=50),
        (rng.beta(0.5, 3, size=400) * 255),
    ]
    for image in images:
        image = image.astype(np.uint8)
        expected = threshold_otsu(image)
        got = otsu_threshold(torch.from_numpy(image.astype(np.int64))[None])
        assert int(got) == int(expected)


def test_otsu_batched_equals_single():
    levels = torch.randint(0, 256, (6, 100), generator=torch.Generator().manual_seed(1))
    levels[2] = 7  # constant image returns its value
    batched = otsu_threshold(levels)
    assert batched[2] == 7
    for b in range(6):
        assert otsu_threshold(levels[b:b + 1]) == batched[b]


@pytest.mark.parametrize(("erode_k", "erode_iter", "min_p"),
                         [(11, 1, 0.1), (5, 2, 0.2), (3, 0, 0.05)])
def test_deterministic_parts_match_reference(erode_k, erode_iter, min_p):
    cams = _random_cams(5, 23, 31, seed=erode_k)
    cams[3] = 0.25  # constant -> all ignored
    h, w = cams.shape[1:]
    seeds = sample_seeds(cams, sl_max=h * w, sl_min=h * w, sl_ksz=1, sl_min_p=min_p,
                         fg_erode_k=erode_k, fg_erode_iter=erode_iter)
    for b in range(cams.shape[0]):
        expected = _reference_all_candidates(cams[b].numpy().astype(np.float64), min_p, erode_k,
                                             erode_iter)
        np.testing.assert_array_equal(seeds[b].numpy(), expected)


def test_erosion_never_empties_and_border_is_geodesic():
    cams = torch.zeros(2, 20, 20)
    cams[0, 8:12, 8:12] = 1.0  # 4x4 blob: an 11x11 erosion would empty it -> kept as is
    cams[1, :, :10] = 1.0      # left half touches the border: erosion only from the right
    seeds = sample_seeds(cams, sl_max=400, sl_min=0, sl_ksz=1, sl_min_p=0.0)
    assert torch.equal(seeds[0] == 1, cams[0] > 0)
    expected = torch.zeros(20, 20, dtype=torch.bool)
    expected[:, :5] = True  # 11x11 window around column x reaches column x + 5
    assert torch.equal(seeds[1] == 1, expected)


def test_published_defaults_give_patches_inside_regions():
    cams = _random_cams(16, 40, 48, seed=3)
    seeds = sample_seeds(cams, generator=torch.Generator().manual_seed(0))
    assert seeds.dtype == torch.long and seeds.shape == cams.shape
    assert set(seeds.unique().tolist()) <= {IGNORE, 0, 1}
    fg_region = torch.from_numpy(np.stack([
        _reference_all_candidates(c.numpy().astype(np.float64), 0.1, 11, 1) for c in cams])) == 1
    low = torch.from_numpy(np.stack([
        _reference_all_candidates(c.numpy().astype(np.float64), 0.1, 1, 0) for c in cams])) == 0
    dilate = lambda m: F.max_pool2d(m[:, None].float(), 3, 1, 1)[:, 0] > 0
    fg, bg = seeds == 1, seeds == 0
    assert not (fg & ~dilate(fg_region)).any()
    assert not (bg & ~dilate(low)).any()
    counts_fg = fg.flatten(1).sum(1)
    counts_bg = bg.flatten(1).sum(1)
    assert (counts_fg <= 9).all() and (counts_bg <= 9).all()
    assert (counts_fg >= 1).all() and (counts_bg >= 1).all()


def test_draws_are_uniform_without_replacement():
    cam = torch.zeros(1, 9, 9)
    cam[0, 2:5, 3:6] = 1.0  # 9-pixel foreground region
    n = 4000
    seeds = sample_seeds(cam.expand(n, -1, -1), sl_max=2, sl_min=0, sl_ksz=1, fg_erode_k=1,
                         sl_min_p=0.0, generator=torch.Generator().manual_seed(0))
    fg = seeds == 1
    assert torch.equal(fg.flatten(1).sum(1), torch.full((n,), 2))  # 2 distinct pixels each
    assert not (fg & ~(cam > 0)).any()
    freq = fg.sum(0)[cam[0] > 0].double()
    expected = n * 2 / 9
    chi2 = ((freq - expected) ** 2 / expected).sum().item()
    assert chi2 < 26.1  # chi-square, 8 dof, p = 0.001


def test_generator_reproducible_and_batch_independent_layout():
    cams = _random_cams(4, 30, 30, seed=5)
    a = sample_seeds(cams, generator=torch.Generator().manual_seed(7))
    b = sample_seeds(cams, generator=torch.Generator().manual_seed(7))
    c = sample_seeds(cams, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(sample_seeds(cams[:, None], generator=torch.Generator().manual_seed(7)), a)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 7, 5), (1, 3, 1)])
def test_edge_shapes_and_constant_maps(shape):
    for cams in (torch.zeros(shape), torch.ones(shape), torch.full(shape, 0.5)):
        assert (sample_seeds(cams) == IGNORE).all()
    cams = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    seeds = sample_seeds(cams, ignore_index=-1)
    assert seeds.shape == shape and set(seeds.unique().tolist()) <= {-1, 0, 1}


def test_two_level_cam_with_clamped_threshold():
    # levels {0, 1}: Otsu gives 0, clamped to 1, so the strict "> 1" region is empty.
    cam = torch.zeros(1, 8, 8)
    cam[0, :4] = 1.5 / 255
    seeds = sample_seeds(cam, sl_ksz=1)
    assert not (seeds == 1).any()
    assert (seeds == 0).sum() == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cams": torch.rand(2, 2, 4, 4)}, "cams"),
        ({"cams": torch.rand(4, 4)}, "cams"),
        ({"cams": torch.rand(1, 4, 4) * 2}, "cams"),
        ({"cams": torch.full((1, 4, 4), float("nan"))}, "cams"),
        ({"cams": torch.rand(1, 4, 4), "sl_ksz": 0}, "sl_ksz"),
        ({"cams": torch.rand(1, 4, 4), "sl_min_p": 1.5}, "sl_min_p"),
        ({"cams": torch.rand(1, 4, 4), "ignore_index": 1}, "ignore_index"),
    ],
)
def test_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_seeds(**kwargs)
    with pytest.raises(TypeError, match="cams"):
        sample_seeds(torch.zeros(1, 4, 4, dtype=torch.long))



def test_bg_outside_roi_keeps_background_seeds_off_a_large_object():
    # A CAM whose Otsu region (0.8 on a 0.1 floor) covers 64 % of the image: the lowest 50 %
    # of the CAM reaches into it, so the published rule puts background seeds on the object.
    cam = torch.full((1, 10, 10), 0.1)
    cam[0, 1:9, 1:9] = 0.8
    cam[0, 3:7, 3:7] = 1.0
    roi = cam[0] > 0.5
    n = 300
    kwargs = {"sl_max": 2, "sl_min": 5, "sl_ksz": 1, "fg_erode_k": 1, "sl_min_p": 0.5}
    plain = sample_seeds(cam.expand(n, -1, -1), generator=torch.Generator().manual_seed(0), **kwargs)
    assert ((plain == 0) & roi).any()
    inside = sample_seeds(cam.expand(n, -1, -1), generator=torch.Generator().manual_seed(0),
                          bg_outside_roi=True, **kwargs)
    assert not ((inside == 0) & roi).any()
    assert torch.equal((inside == 0).flatten(1).sum(1), torch.full((n,), 5))  # 36 candidates left
    # A small object: the two rules draw from the same candidates, hence identical seeds.
    small = torch.full((2, 12, 12), 0.1)
    small[:, 4:8, 4:8] = 1.0
    same = [sample_seeds(small, generator=torch.Generator().manual_seed(3), bg_outside_roi=flag)
            for flag in (False, True)]
    assert torch.equal(same[0], same[1])
    with pytest.raises(TypeError, match="bg_outside_roi"):
        sample_seeds(small, bg_outside_roi=1)


def _square_on_a_blob():
    """A CAM blob (Otsu region 8 x 8) around a 4 x 4 bright square on a dark image."""
    cam = torch.full((1, 12, 12), 0.1)
    cam[0, 2:10, 2:10] = 0.8
    cam[0, 4:8, 4:8] = 1.0
    images = torch.full((1, 3, 12, 12), 20.0)
    images[0, :, 4:8, 4:8] = torch.tensor([230.0, 200.0, 40.0])[:, None, None]
    square = torch.zeros(12, 12, dtype=torch.bool)
    square[4:8, 4:8] = True
    return cam, images, square


def test_colour_filter_keeps_seeds_on_the_colours_of_their_region():
    cam, images, square = _square_on_a_blob()
    n = 200
    kwargs = {"sl_max": 8, "sl_min": 8, "sl_ksz": 1, "fg_erode_k": 1, "sl_min_p": 0.5,
              "bg_outside_roi": True}
    plain = sample_seeds(cam.expand(n, -1, -1), generator=torch.Generator().manual_seed(0), **kwargs)
    # The CAM alone puts foreground seeds on the dark ring inside its region (48 of 64 pixels).
    assert ((plain == 1) & ~square).any()
    filtered = sample_seeds(cam.expand(n, -1, -1), images=images.expand(n, -1, -1, -1),
                            colour_bins=8, generator=torch.Generator().manual_seed(0), **kwargs)
    # Dark is 48 / 64 of the region but all of the 80 background candidates: a background
    # colour. Yellow occurs only in the region: the 16 square pixels are the only candidates.
    assert not ((filtered == 1) & ~square).any()
    assert torch.equal((filtered == 1).flatten(1).sum(1), torch.full((n,), 8))
    assert torch.equal(filtered == 0, plain == 0)  # every background candidate is dark


def test_colour_ratio_golden_shares():
    from fcam.losses.seeds import _colour_ratio

    # 4 colour bins; inside = pixels 0-3 (bins 0, 0, 0, 1), outside = pixels 4-7 (bins 1, 1, 2, 0).
    colours = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 0], [3, 3, 3, 3, 3, 3, 3, 3]])
    inside = torch.tensor([[True] * 4 + [False] * 4, [True] * 2 + [False] * 6])
    # Shares with one pseudo-count per bin, (count + 1) / (4 + 4): inside bins 0..3 = 4, 2, 1, 1
    # (/8); outside = 2, 3, 2, 1 (/8). Ratios: bin 0 -> 2, bin 1 -> 2/3, bin 2 -> 1/2.
    # Second image, one colour: (2 + 1) / (2 + 4) over (6 + 1) / (6 + 4) = 5/7.
    ratio = _colour_ratio(colours, 4, inside, ~inside)
    expected = torch.tensor([[2, 2, 2, 2 / 3, 2 / 3, 2 / 3, 1 / 2, 2], [5 / 7] * 8])
    assert torch.allclose(ratio, expected)


def test_colour_filter_off_or_uninformative_changes_nothing():
    cams = _random_cams(4, 16, 16, seed=5)
    images = torch.rand(4, 3, 16, 16) * 255
    ref = sample_seeds(cams, sl_max=5, sl_min=5, generator=torch.Generator().manual_seed(1))
    off = sample_seeds(cams, sl_max=5, sl_min=5, images=images, colour_bins=0,
                       generator=torch.Generator().manual_seed(1))
    assert torch.equal(ref, off)
    # One colour everywhere: one side keeps every candidate, the other would keep none and
    # falls back to its unfiltered candidates, so the draws are the CAM-only ones.
    flat = torch.full((4, 1, 16, 16), 90.0)
    same = sample_seeds(cams, sl_max=5, sl_min=5, images=flat, colour_bins=16,
                        generator=torch.Generator().manual_seed(1))
    assert torch.equal(ref, same)


def test_weighted_draw_picks_in_proportion_to_the_weights():
    from fcam.losses.seeds import _draw

    rows = 20000
    candidates = torch.tensor([True, True, True, False]).expand(rows, -1)
    weights = torch.tensor([1.0, 2.0, 7.0, 50.0]).expand(rows, -1)
    first = _draw(candidates, 1, torch.Generator().manual_seed(0), weights)
    share = first.float().mean(0)
    # One draw: P(pixel) = w / sum(w) over the candidates (the non-candidate never counts).
    assert torch.allclose(share, torch.tensor([0.1, 0.2, 0.7, 0.0]), atol=0.015)
    # Two draws without replacement from three: P(pixel 0 left out) = P(1 then 2) + P(2 then 1)
    # = 0.2 * 7/8 + 0.7 * 2/3 = 0.6417.
    second = _draw(candidates, 2, torch.Generator().manual_seed(1), weights)
    assert torch.equal(second.sum(1), torch.full((rows,), 2))
    assert abs(float((~second[:, 0]).float().mean()) - (0.2 * 7 / 8 + 0.7 * 2 / 3)) < 0.015


def test_colour_weighting_prefers_the_region_colours_without_dropping_candidates():
    cam, images, square = _square_on_a_blob()
    n = 400
    kwargs = {"sl_max": 1, "sl_min": 1, "sl_ksz": 1, "fg_erode_k": 1, "sl_min_p": 0.5,
              "bg_outside_roi": True, "colour_bins": 8}
    weighted = sample_seeds(cam.expand(n, -1, -1), images=images.expand(n, -1, -1, -1),
                            colour_mode="weight", generator=torch.Generator().manual_seed(0), **kwargs)
    on_square = float(((weighted == 1) & square).flatten(1).any(1).float().mean())
    # Per pixel weights: yellow (16 + 1) / (64 + 512) over 1 / (80 + 512) = 17.5; dark
    # (48 + 1) / 576 over (80 + 1) / 592 = 0.62. P(square) = 16 * 17.5 / (16 * 17.5 + 48 * 0.62).
    expected = 16 * 17.47 / (16 * 17.47 + 48 * 0.6218)
    assert abs(on_square - expected) < 0.05
    assert ((weighted == 1) & ~square).any()  # the ring keeps some chance
    # One colour everywhere: every weight of an image is the same, so the draws are exactly
    # the unweighted ones.
    cams = _random_cams(4, 16, 16, seed=5)
    flat = torch.full((4, 3, 16, 16), 90.0)
    ref = sample_seeds(cams, sl_max=5, sl_min=5, generator=torch.Generator().manual_seed(1))
    same = sample_seeds(cams, sl_max=5, sl_min=5, images=flat, colour_bins=4, colour_mode="weight",
                        generator=torch.Generator().manual_seed(1))
    assert torch.equal(ref, same)
    with pytest.raises(ValueError, match="colour_mode"):
        sample_seeds(cams, images=flat, colour_bins=4, colour_mode="soft")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"colour_bins": 8}, ValueError, "colour_bins"),
    ({"colour_bins": -1, "images": torch.zeros(1, 3, 12, 12)}, ValueError, "colour_bins"),
    ({"colour_bins": 65, "images": torch.zeros(1, 3, 12, 12)}, ValueError, "colour_bins"),
    ({"colour_bins": 8, "images": torch.zeros(1, 3, 6, 12)}, ValueError, "images"),
    ({"colour_bins": 8, "images": torch.zeros(2, 3, 12, 12)}, ValueError, "images"),
    ({"colour_bins": 8, "images": torch.zeros(1, 2, 12, 12)}, ValueError, "images"),
    ({"colour_bins": 8, "images": torch.zeros(1, 3, 12, 12, dtype=torch.long)}, TypeError, "images"),
])
def test_colour_filter_bad_inputs(kwargs, error, match):
    cam, _, _ = _square_on_a_blob()
    with pytest.raises(error, match=match):
        sample_seeds(cam, **kwargs)


def test_colour_filter_on_grey_images():
    cam, images, square = _square_on_a_blob()
    seeds = sample_seeds(cam.expand(50, -1, -1), images=images[:, :1].expand(50, -1, -1, -1),
                         colour_bins=16, sl_max=4, sl_ksz=1, fg_erode_k=1, sl_min_p=0.5,
                         bg_outside_roi=True, generator=torch.Generator().manual_seed(0))
    assert (seeds == 1).any() and not ((seeds == 1) & ~square).any()


# --- SeedLoss -------------------------------------------------------------------------------

def _seeds(batch, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    seeds = torch.full((batch, h, w), IGNORE)
    mask = torch.rand(batch, h, w, generator=g) < 0.3
    seeds[mask] = torch.randint(0, 2, (int(mask.sum()),), generator=g)
    return seeds


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seed_loss_is_mean_ce_over_seeded_pixels(dtype):
    logits = torch.randn(3, 2, 6, 5, dtype=dtype)
    seeds = _seeds(3, 6, 5)
    expected = F.cross_entropy(logits, seeds, ignore_index=IGNORE)
    # by hand: -log softmax at the labelled pixels, averaged
    logp = torch.log_softmax(logits, 1)
    b, y, x = torch.nonzero(seeds != IGNORE, as_tuple=True)
    by_hand = -logp[b, seeds[b, y, x], y, x].mean()
    got = SeedLoss()(logits, seeds)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, by_hand)


def test_seed_loss_without_seeds_is_zero_and_differentiable():
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    loss = seed_loss(logits, torch.full((2, 4, 4), IGNORE))
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all() and (grad == 0).all()


def test_seed_loss_gradcheck():
    logits = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    seeds = _seeds(2, 3, 4, seed=1)
    seeds[0, 0, 0] = 1
    assert torch.autograd.gradcheck(lambda z: seed_loss(z, seeds), (logits,))


def test_seed_loss_bad_inputs():
    logits = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="seeds"):
        seed_loss(logits, torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="seeds"):
        seed_loss(logits, torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="seeds"):
        seed_loss(logits, torch.full((1, 4, 4), 2))
    with pytest.raises(ValueError, match="logits"):
        seed_loss(torch.randn(2, 4, 4), torch.zeros(2, 4, dtype=torch.long))


def test_seeds_on_device(device: torch.device):
    cams = _random_cams(4, 30, 30, seed=2)
    cpu = sample_seeds(cams, sl_max=900, sl_min=900, sl_ksz=1)
    gpu = sample_seeds(cams.to(device), sl_max=900, sl_min=900, sl_ksz=1,
                       generator=torch.Generator(device=device).manual_seed(0))
    assert gpu.device.type == device.type
    assert torch.equal(gpu.cpu(), cpu)
