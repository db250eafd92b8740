"""CAM -> score map preparation: wsolevaluation's cv2 bicubic + normalize_scoremap, F-CAM's
normalise-then-bilinear, and untouched probability maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcam.metrics import maxboxacc, normalize_scoremaps, prepare_scoremaps


def wsol_reference(cam: np.ndarray, size: int) -> np.ndarray:
    """inference.py: cv2.resize INTER_CUBIC, then normalize_scoremap."""
    resized = cv2.resize(cam, (size, size), interpolation=cv2.INTER_CUBIC)
    if np.isnan(resized).any() or resized.min() == resized.max():
        return np.zeros_like(resized)
    resized = resized - resized.min()
    return resized / resized.max()


def test_bicubic_after_equals_wsolevaluation():
    cams = torch.randn(3, 7, 7, generator=torch.Generator().manual_seed(0))  # signed, no ReLU
    out = prepare_scoremaps(cams, 56)
    for cam, got in zip(cams.numpy(), out.numpy(), strict=True):
        np.testing.assert_array_equal(got, wsol_reference(cam, 56))
    assert out.dtype == torch.float32 and out.min() == 0 and out.max() == 1


def test_channel_dim_and_rectangular_size():
    cams = torch.randn(2, 1, 7, 7, generator=torch.Generator().manual_seed(1))
    out = prepare_scoremaps(cams, (48, 64))
    assert out.shape == (2, 48, 64)
    expected = cv2.resize(cams[1, 0].numpy(), (64, 48), interpolation=cv2.INTER_CUBIC)
    expected = (expected - expected.min()) / (expected - expected.min()).max()
    np.testing.assert_array_equal(out[1].numpy(), expected)


def test_bilinear_before_is_fcam_order():
    cams = torch.randn(2, 7, 7, generator=torch.Generator().manual_seed(2))
    low = (cams - cams.amin((1, 2), keepdim=True)) / (
        cams.amax((1, 2), keepdim=True) - cams.amin((1, 2), keepdim=True)
    )
    expected = F.interpolate(low[:, None], size=(40, 30), mode="bilinear", align_corners=False)[
        :, 0
    ]
    got = prepare_scoremaps(cams, (40, 30), upsample="bilinear", normalize="before")
    torch.testing.assert_close(got, expected)
    assert got.shape == (2, 40, 30)


def test_probabilities_are_not_normalised():
    probs = torch.full((1, 4, 4), 0.3)
    probs[0, 1:3, 1:3] = 0.8
    out = prepare_scoremaps(probs, 8, upsample="bilinear", normalize="none")
    assert out.max().item() == pytest.approx(0.8) and out.min().item() == pytest.approx(0.3)
    # bicubic overshoot past the [0, 1] range is clamped
    sharp = torch.zeros(1, 4, 4)
    sharp[0, 1:3, 1:3] = 1.0
    out = prepare_scoremaps(sharp, 16, normalize="none")
    assert out.min() == 0 and out.max() == 1


def test_constant_and_nan_maps_become_zeros():
    maps = torch.stack([torch.full((5, 5), 2.0), torch.rand(5, 5), torch.rand(5, 5)])
    maps[2, 0, 0] = float("nan")
    out = normalize_scoremaps(maps)
    assert (out[0] == 0).all() and (out[2] == 0).all() and out[1].max() == 1
    tiny = torch.zeros(1, 2, 2)
    tiny[0, 0, 0] = 1e-12  # a tiny range is still stretched, as in the reference
    assert normalize_scoremaps(tiny)[0, 0, 0] == 1.0


def test_output_feeds_the_evaluators():
    cams = torch.zeros(1, 7, 7)
    cams[0, 2:5, 2:5] = 1.0
    maps = prepare_scoremaps(cams, 224)
    assert 0 <= maxboxacc(maps, [np.array([[64, 64, 160, 160]])], cam_curve_interval=0.01) <= 100


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"upsample": "area"}, ValueError),
        ({"normalize": "twice"}, ValueError),
        ({"size": 0}, ValueError),
    ],
)
def test_bad_options(kwargs, error):
    with pytest.raises(error):
        prepare_scoremaps(torch.rand(1, 7, 7), **kwargs)


def test_bad_cams():
    with pytest.raises(TypeError, match="floating"):
        prepare_scoremaps(torch.ones(1, 7, 7, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        prepare_scoremaps(torch.rand(7, 7))
