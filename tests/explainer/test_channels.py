"""Classifiers that do not take RGB: grey models fit on the grey image, others on a ``raw`` view.

Each fit is compared with an RGB twin: a copy of the classifier whose first convolution reads
the same numbers from an RGB image (the grey channel, or the RGB part of a 4-channel input),
so that the twin's fit is what the CRF and the seeds must reproduce.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fcam import FCAM
from fcam.explainer.batches import as_rgb

SIZE = 32


def net(channels: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
    ).eval()  # fmt: skip


def rgb_twin(model: nn.Sequential, rgb_from: slice) -> nn.Sequential:
    """The same classifier reading its input channels ``rgb_from`` from the R channel on.

    The twin's first convolution holds the original weights on the R channel (grey model) or on
    R, G, B (a 4-channel model's first three), and zeros elsewhere, so it computes the same
    features from the RGB image as the original from its own input.
    """
    twin = copy.deepcopy(model)
    conv = model[0]
    first = nn.Conv2d(3, conv.out_channels, 3, padding=1)
    with torch.no_grad():
        first.weight.zero_()
        width = conv.weight[:, rgb_from].shape[1]
        first.weight[:, :width] = conv.weight[:, rgb_from]
        first.bias.copy_(conv.bias)
    twin[0] = first
    return twin.eval()


def fit_pair(model: nn.Module, twin: nn.Module, batch: dict, twin_batch: dict, channels: int):
    kw = {"widths": (8, 4), "sigma_rgb": 60.0, "seed": 0, "cam": "gradcam"}
    fc = FCAM(model, "4", mean=(0.5,) * channels, std=(0.5,) * channels, **kw)
    ref = FCAM(twin, "4", mean=(0.5,) * 3, std=(0.5,) * 3, **kw)
    hist = fc.fit([batch] * 2, epochs=2, progress=False)
    ref_hist = ref.fit([twin_batch] * 2, epochs=2, progress=False)
    return fc, ref, hist, ref_hist


def assert_same_fit(hist: list, ref_hist: list) -> None:
    for h, r in zip(hist, ref_hist, strict=True):
        for key in ("loss", "seed", "crf", "size", "fg_share", "cam_fg_share"):
            assert h[key] == pytest.approx(r[key], rel=1e-4, abs=1e-6), key


def test_grey_model_fits_like_its_rgb_twin_on_the_replicated_image() -> None:
    g = torch.Generator().manual_seed(3)
    grey = torch.rand(4, 1, SIZE, SIZE, generator=g)
    grey[:, :, 8:20, 10:22] = 0.9  # a bright square for the CRF to follow
    labels = torch.tensor([0, 1, 2, 0])
    norm = (grey - 0.5) / 0.5
    model = net(1)
    twin = rgb_twin(model, slice(0, 1))
    rgb = grey.expand(-1, 3, -1, -1)
    # The twin's G and B channels carry the same grey value but have zero weights.
    fc, ref, hist, ref_hist = fit_pair(
        model, twin, {"image": norm, "label": labels},
        {"image": norm.expand(-1, 3, -1, -1), "label": labels}, channels=1,
    )
    assert_same_fit(hist, ref_hist)
    maps = fc.explain(norm, targets=labels)
    assert maps.shape == (4, SIZE, SIZE) and torch.isfinite(maps).all()
    torch.testing.assert_close(maps, ref.explain(rgb * 2 - 1, targets=labels), atol=1e-4, rtol=0)


def test_four_channel_model_fits_on_its_raw_rgb_view() -> None:
    g = torch.Generator().manual_seed(4)
    rgb = torch.rand(4, 3, SIZE, SIZE, generator=g)
    depth = torch.rand(4, 1, SIZE, SIZE, generator=g)
    labels = torch.tensor([0, 1, 2, 1])
    model = net(4)
    with torch.no_grad():
        model[0].weight[:, 3] = 0  # the 4th band does not change the features
    twin = rgb_twin(model, slice(0, 3))
    norm4 = (torch.cat([rgb, depth], 1) - 0.5) / 0.5
    raw = rgb * 255
    fc, ref, hist, ref_hist = fit_pair(
        model, twin, {"image": norm4, "label": labels, "raw": raw},
        {"image": (rgb - 0.5) / 0.5, "label": labels}, channels=4,
    )
    assert_same_fit(hist, ref_hist)
    torch.testing.assert_close(
        fc.explain(norm4, targets=labels), ref.explain((rgb - 0.5) / 0.5, targets=labels),
        atol=1e-4, rtol=0,
    )


def test_four_channel_model_without_raw_says_what_to_yield() -> None:
    fc = FCAM(net(4), "4", mean=(0.5,) * 4, std=(0.5,) * 4, widths=(8, 4))
    with pytest.raises(ValueError, match=r"4-channel images.*'raw' \(B, 3, H, W\)"):
        fc.fit([torch.zeros(2, 4, SIZE, SIZE)], epochs=1, progress=False)


@pytest.mark.parametrize("shape", [(2, 2, SIZE, SIZE), (2, 3, 8, 8), (1, 3, SIZE, SIZE), (3, SIZE, SIZE)])
def test_raw_of_the_wrong_shape_is_refused(shape: tuple[int, ...]) -> None:
    fc = FCAM(net(4), "4", mean=(0.5,) * 4, std=(0.5,) * 4, widths=(8, 4))
    batch = {"image": torch.zeros(2, 4, SIZE, SIZE), "raw": torch.zeros(shape)}
    with pytest.raises(ValueError, match=r"raw image must be a \(B, 3, H, W\) RGB or \(B, 1, H, W\) grey"):
        fc.fit([batch], epochs=1, progress=False)


def test_as_rgb_replicates_grey_and_passes_rgb_through() -> None:
    grey = torch.arange(4.0).view(1, 1, 2, 2)
    assert torch.equal(as_rgb(grey), grey.repeat(1, 3, 1, 1))
    rgb = torch.rand(2, 3, 2, 2)
    assert as_rgb(rgb) is rgb
