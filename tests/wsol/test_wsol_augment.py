"""HaS and CutMix against the published formulas (wsolevaluation's wsol/method/{has,cutmix}.py,
re-derived here with the row/column mix-up of HaS fixed)."""

from __future__ import annotations

import math

import pytest
import torch

from fcam.wsol import cutmix, has
from fcam.wsol.augment import _cutmix_box


def _has_reference(images, grid, draws, rate):
    """wsolevaluation's triple loop over patches, with y over rows and x over columns."""
    out = images.clone()
    _, _, height, width = images.shape
    for b in range(images.shape[0]):
        for i, y in enumerate(range(0, height, grid)):
            for j, x in enumerate(range(0, width, grid)):
                if not draws[b, i, j] >= rate:
                    out[b, :, y:min(height, y + grid), x:min(width, x + grid)] = 0.0
    return out


@pytest.mark.parametrize("shape", [(2, 3, 10, 17), (1, 1, 17, 6), (3, 2, 8, 8)])
@pytest.mark.parametrize("grid", [1, 3, 4])
def test_has_grid_matches_reference_on_non_square_images(shape, grid):
    images = torch.rand(*shape) + 0.1
    out = has(images, grid, 0.5, generator=torch.Generator().manual_seed(3))
    rows, cols = math.ceil(shape[2] / grid), math.ceil(shape[3] / grid)
    draws = torch.rand(shape[0], rows, cols, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, _has_reference(images, grid, draws, 0.5))


def test_has_hides_whole_patches_and_keeps_input():
    images = torch.ones(4, 3, 12, 20)
    out = has(images, 4, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(images, torch.ones(4, 3, 12, 20))  # input untouched
    patches = out[:, 0].reshape(4, 3, 4, 5, 4).permute(0, 1, 3, 2, 4)
    assert (patches.amax(dim=(-2, -1)) == patches.amin(dim=(-2, -1))).all()  # constant patches
    assert 0 < float((out == 0).float().mean()) < 1


def test_has_extremes_and_seed():
    images = torch.rand(2, 3, 9, 7)
    assert torch.equal(has(images, 4, 0.0), images)
    assert not has(images, 4, 1.0).any()
    assert torch.equal(has(images, 0, 1.0), images)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(has(images, 2, 0.5, generator=g1), has(images, 2, 0.5, generator=g2))


def test_has_drop_rate_is_the_hidden_share():
    out = has(torch.ones(64, 1, 32, 32), 4, 0.3, generator=torch.Generator().manual_seed(0))
    assert abs(float((out == 0).float().mean()) - 0.3) < 0.02


def _rand_bbox_reference(height, width, lam, cy, cx):
    """CutMix's rand_bbox with np.int replaced by int (box in (row, column) order)."""
    cut_rat = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_rat), int(width * cut_rat)
    clip = lambda v, hi: min(max(v, 0), hi)
    return (clip(cy - cut_h // 2, height), clip(cx - cut_w // 2, width),
            clip(cy + cut_h // 2, height), clip(cx + cut_w // 2, width))


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_box_formula(seed):
    lam = 0.1 + 0.15 * seed
    box = _cutmix_box(13, 22, lam, torch.Generator().manual_seed(seed))
    centre = torch.rand(2, generator=torch.Generator().manual_seed(seed)).tolist()
    cy, cx = int(centre[0] * 13), int(centre[1] * 22)
    assert box == _rand_bbox_reference(13, 22, lam, cy, cx)


@pytest.mark.parametrize("seed", range(8))
def test_cutmix_lam_is_the_clipped_box_area(seed):
    batch, height, width = 6, 11, 18
    images = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 2, height, width).clone()
    labels = torch.arange(batch) + 10
    mixed, labels_a, labels_b, lam = cutmix(images, labels, beta=1.0,
                                            generator=torch.Generator().manual_seed(seed))
    assert torch.equal(labels_a, labels)
    source = mixed[:, 0].round().long()  # which image every pixel comes from
    for b in range(batch):
        pasted = source[b] != b
        donor = int(labels_b[b]) - 10
        if donor != b:
            assert set(source[b][pasted].tolist()) <= {donor}
            area = int(pasted.sum())
            ys, xs = pasted.nonzero(as_tuple=True)
            if area:
                box = (int(ys.max() - ys.min() + 1)) * (int(xs.max() - xs.min() + 1))
                assert box == area  # one rectangle
            assert lam == pytest.approx(1 - area / (height * width))
    assert torch.equal(images[:, 0, 0, 0], torch.arange(batch, dtype=torch.float32))  # input untouched


def test_cutmix_is_seeded():
    images, labels = torch.rand(4, 3, 8, 8), torch.arange(4)
    a = cutmix(images, labels, generator=torch.Generator().manual_seed(1))
    b = cutmix(images, labels, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and a[3] == b[3]


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: has(torch.rand(3, 8, 8)), ValueError, "images"),
        (lambda: has(torch.zeros(1, 3, 8, 8, dtype=torch.long)), TypeError, "images"),
        (lambda: has(torch.rand(1, 3, 8, 8), drop_rate=1.5), ValueError, "drop_rate"),
        (lambda: has(torch.rand(1, 3, 8, 8), drop_rate=-0.1), ValueError, "drop_rate"),
        (lambda: has(torch.rand(1, 3, 8, 8), grid_size=-1), ValueError, "grid_size"),
        (lambda: cutmix(torch.rand(2, 8, 8), torch.arange(2)), ValueError, "images"),
        (lambda: cutmix(torch.rand(2, 3, 8, 8), torch.arange(3)), ValueError, "labels"),
        (lambda: cutmix(torch.rand(2, 3, 8, 8), torch.arange(2), beta=0), ValueError, "beta"),
    ],
)
def test_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
