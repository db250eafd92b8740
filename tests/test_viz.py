"""Tests for fcam.viz: colour order, blending, resizing, de-normalisation, grid layout, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fcam.viz import COLORMAPS, comparison_grid, overlay


def _cv2_rgb(map_u8: np.ndarray, code: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Independent oracle: OpenCV colouring converted with cvtColor."""
    return cv2.cvtColor(cv2.applyColorMap(map_u8, code), cv2.COLOR_BGR2RGB)


def _gradient_image(h: int = 12, w: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 15 % 256, yy * 20 % 256, (xx + yy) * 7 % 256], axis=2).astype(np.uint8)


# --------------------------------------------------------------------------------- overlay
def test_jet_is_rgb_not_bgr() -> None:
    black = np.zeros((4, 4, 3), dtype=np.uint8)
    hot = overlay(black, torch.ones(4, 4), alpha=1.0)
    cold = overlay(black, torch.zeros(4, 4), alpha=1.0)
    # jet(1) is dark red, jet(0) dark blue; in RGB the first channel carries red.
    assert hot[..., 0].min() >= 100 and hot[..., 2].max() <= 10
    assert cold[..., 2].min() >= 100 and cold[..., 0].max() <= 10


@pytest.mark.parametrize("name,code", [("jet", cv2.COLORMAP_JET), ("viridis", cv2.COLORMAP_VIRIDIS)])
def test_full_opacity_matches_opencv_colouring(name: str, code: int) -> None:
    ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    out = overlay(np.zeros((16, 16, 3), dtype=np.uint8), torch.from_numpy(ramp), name, alpha=1.0)
    expected = _cv2_rgb(np.round(ramp * 255).astype(np.uint8), code)
    np.testing.assert_array_equal(out, expected)


def test_blend_formula() -> None:
    image = _gradient_image()
    heat = np.random.default_rng(0).random((12, 16)).astype(np.float32)
    out = overlay(image, heat, alpha=0.3)
    colour = _cv2_rgb(np.round(heat * 255).astype(np.uint8)).astype(np.float64)
    expected = np.round(0.7 * image + 0.3 * colour)
    assert out.dtype == np.uint8 and out.shape == (12, 16, 3)
    assert np.abs(out.astype(np.float64) - expected).max() <= 1


def test_alpha_zero_returns_image() -> None:
    image = _gradient_image()
    np.testing.assert_array_equal(overlay(image, torch.rand(3, 3), alpha=0.0), image)


def test_low_resolution_map_is_resized_bilinearly() -> None:
    heat = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    out = overlay(np.zeros((8, 8, 3), dtype=np.uint8), heat, alpha=1.0)
    # cv2.resize INTER_LINEAR uses the same half-pixel convention as align_corners=False.
    resized = cv2.resize(heat.numpy(), (8, 8), interpolation=cv2.INTER_LINEAR)
    expected = _cv2_rgb(np.round(resized * 255).astype(np.uint8))
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 8
    assert out[:, 0, 2].min() > 100 and out[:, 0, 0].max() < 10  # left: blue
    assert out[:, -1, 0].min() > 100 and out[:, -1, 2].max() < 10  # right: red


def test_pil_in_pil_out() -> None:
    image = Image.fromarray(_gradient_image())
    out = overlay(image, torch.rand(5, 5))
    assert isinstance(out, Image.Image)
    assert out.mode == "RGB" and out.size == image.size


def test_grey_and_rgba_arrays() -> None:
    grey = np.full((6, 6), 90, dtype=np.uint8)
    np.testing.assert_array_equal(overlay(grey, torch.zeros(6, 6), alpha=0.0), np.full((6, 6, 3), 90))
    rgba = np.dstack([_gradient_image(6, 6), np.full((6, 6), 255, np.uint8)])
    np.testing.assert_array_equal(
        overlay(rgba, torch.zeros(6, 6), alpha=0.0), _gradient_image(6, 6)
    )


def test_normalised_tensor_is_denormalised() -> None:
    image = _gradient_image()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    normalised = (tensor - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    out = overlay(normalised, torch.rand(4, 4), alpha=0.0, mean=mean, std=std)
    assert np.abs(out.astype(int) - image.astype(int)).max() <= 1
    # A batch of one and a uint8 tensor are accepted too.
    assert overlay(normalised[None], torch.rand(4, 4), mean=mean, std=std).shape == (12, 16, 3)
    as_u8 = torch.from_numpy(image).permute(2, 0, 1)
    np.testing.assert_array_equal(overlay(as_u8, torch.rand(4, 4), alpha=0.0), image)


def test_map_with_singleton_dims_and_numpy() -> None:
    heat = torch.rand(1, 1, 4, 4)
    image = _gradient_image(4, 4)
    np.testing.assert_array_equal(overlay(image, heat), overlay(image, heat[0, 0].numpy()))


def test_map_tensor_is_not_modified() -> None:
    heat = torch.rand(4, 4, requires_grad=True)
    before = heat.detach().clone()
    overlay(_gradient_image(4, 4), heat)
    assert torch.equal(heat.detach(), before)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"image": np.zeros((4, 4, 3), np.float32)}, TypeError, "uint8"),
        ({"image": [[0, 1]]}, TypeError, "image must be"),
        ({"image": np.zeros((4, 4, 2), np.uint8)}, ValueError, "HWC"),
        ({"image": torch.rand(4, 4)}, ValueError, "CHW"),
        ({"image": torch.rand(3, 4, 4) * 3}, ValueError, "mean= and std="),
        ({"image": torch.zeros(3, 4, 4, dtype=torch.int32)}, TypeError, "float or uint8"),
        ({"mean": (0.5, 0.5, 0.5)}, ValueError, "together"),
        ({"mean": (0.5, 0.5), "std": (1.0, 1.0)}, ValueError, "mean must have 1 or 3"),
        ({"mean": 0.5, "std": 0.0}, ValueError, "zeros"),
        ({"map": torch.rand(4, 4) * 4}, ValueError, r"\[0, 1\]"),
        ({"map": torch.full((4, 4), float("nan"))}, ValueError, "NaN"),
        ({"map": torch.rand(2, 4, 4)}, ValueError, "2-D"),
        ({"map": [[0.5]]}, TypeError, "map must be"),
        ({"colormap": "nope"}, ValueError, "unknown colormap"),
        ({"colormap": 3}, TypeError, "colormap"),
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"alpha": "0.5"}, TypeError, "alpha"),
    ],
)
def test_bad_inputs(kwargs: dict, error: type[Exception], match: str) -> None:
    args = {"image": torch.rand(3, 4, 4), "map": torch.rand(4, 4), **kwargs}
    with pytest.raises(error, match=match):
        overlay(**args)


def test_colormaps_listed() -> None:
    assert "jet" in COLORMAPS and "viridis" in COLORMAPS


def test_device_inputs(device: torch.device) -> None:
    image = torch.rand(3, 8, 8, device=device)
    heat = torch.rand(2, 2, device=device)
    np.testing.assert_array_equal(overlay(image, heat), overlay(image.cpu(), heat.cpu()))


# ------------------------------------------------------------------------ comparison_grid
def test_grid_layout_boxes_and_png(tmp_path) -> None:
    images = torch.zeros(2, 3, 40, 40)
    maps = {"cam": torch.zeros(2, 5, 5), "fcam": torch.ones(2, 40, 40)}
    gt = torch.zeros(2, 40, 40)
    gt[:, 10:30, 10:30] = 1
    boxes = torch.tensor([[10, 10, 29, 29], [0, 0, 39, 39]])
    pred = {"fcam": [np.array([[5, 5, 15, 15]]), np.zeros((0, 4))]}
    path = tmp_path / "nested" / "grid.png"
    grid = comparison_grid(images, maps, gt=gt, boxes=boxes, path=path, pred_boxes=pred, alpha=1.0)

    pad, header, tile = 4, 14, 40
    assert grid.size == (pad + 4 * (tile + pad), header + 2 * (tile + pad))
    saved = np.array(Image.open(path))
    np.testing.assert_array_equal(saved, np.array(grid))
    assert os.listdir(path.parent) == ["grid.png"]  # no temp file left behind

    def pixel(row: int, col: int, y: int, x: int) -> tuple[int, ...]:
        return tuple(saved[header + row * (tile + pad) + y, pad + col * (tile + pad) + x])

    assert pixel(0, 0, 20, 20) == (0, 0, 0)  # image interior
    assert pixel(0, 1, 20, 20) == (255, 255, 255)  # GT mask inside
    assert pixel(0, 1, 2, 2) == (0, 0, 0)  # GT mask outside
    assert pixel(0, 2, 35, 35) == (0, 0, 128)  # cam column: jet(0) in RGB
    assert pixel(0, 3, 35, 35) == (128, 0, 0)  # fcam column: jet(1) in RGB
    for col in range(4):
        assert pixel(0, col, 10, 20) == (0, 200, 0)  # GT box top edge, every column
    assert pixel(0, 3, 5, 10) == (230, 0, 0)  # predicted box, own column only
    assert pixel(0, 2, 5, 10) == (0, 0, 128)


def test_grid_sequences_mixed_sizes_and_tile_size() -> None:
    images = [Image.fromarray(_gradient_image(20, 30)), _gradient_image(10, 10)]
    maps = {"gradcam": [np.zeros((3, 3), np.float32), torch.ones(2, 2)]}
    grid = comparison_grid(images, maps, tile_size=16)
    assert grid.size == (4 + 2 * 20, 14 + 2 * 20)
    # Single image / single map without a batch dimension.
    single = comparison_grid(torch.rand(3, 8, 8), {"cam": torch.rand(8, 8)})
    assert single.size == (4 + 2 * 12, 14 + 12)


def test_grid_does_not_import_matplotlib() -> None:
    code = (
        "import sys, torch; from fcam.viz import comparison_grid;"
        "comparison_grid(torch.rand(1, 3, 8, 8), {'a': torch.rand(1, 2, 2)});"
        "assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"images": []}, ValueError, "images is empty"),
        ({"images": 3}, TypeError, "images must be"),
        ({"maps_by_method": {}}, ValueError, "maps_by_method is empty"),
        ({"maps_by_method": [torch.rand(2, 4, 4)]}, TypeError, "mapping"),
        ({"maps_by_method": {"cam": torch.rand(3, 4, 4)}}, ValueError, "3 entries but there are 2"),
        ({"gt": torch.rand(1, 8, 8)}, ValueError, "gt has 1 entries"),
        ({"boxes": torch.zeros(2, 3)}, ValueError, r"\(x0, y0, x1, y1\)"),
        ({"pred_boxes": {"other": torch.zeros(2, 4)}}, ValueError, "not in maps_by_method"),
        ({"tile_size": 0}, ValueError, "tile_size"),
    ],
)
def test_grid_bad_inputs(kwargs: dict, error: type[Exception], match: str) -> None:
    args = {"images": torch.rand(2, 3, 8, 8), "maps_by_method": {"cam": torch.rand(2, 4, 4)}}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        comparison_grid(**args)


def test_grid_titles_fit_their_column() -> None:
    long_name = "Grad-CAM++ + F-CAM with a very long method name"
    maps = {long_name: torch.zeros(1, 4, 4), "": torch.zeros(1, 4, 4)}  # third title empty
    header = np.array(comparison_grid(torch.zeros(1, 3, 48, 48), maps))[:14]
    ink = header.sum(axis=2) < 200
    second, third = slice(4 + 48 + 4, 4 + 2 * (48 + 4)), slice(4 + 2 * (48 + 4), None)
    assert ink[:, second].any()  # the (shortened) long title is drawn in its column
    assert not ink[:, third].any()  # and does not spill into the next one
