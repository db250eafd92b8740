"""The overlay primitive: a map coloured with an OpenCV colour map and blended onto an image.

It lives at the bottom of the package so that every layer can draw maps: :mod:`fcam.viz` builds
its comparison grids on it and :mod:`fcam.evaluation` its report galleries. Users call it as
:func:`fcam.viz.overlay`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import overload

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from fcam.core.validation import check_number

__all__ = [
    "COLORMAPS", "GT_BOX_COLOUR", "PRED_BOX_COLOUR", "blend", "draw_boxes", "image_to_tensor",
    "map_to_tensor", "overlay",
]

#: Names accepted by the ``colormap`` argument (OpenCV colour maps, lower case).
COLORMAPS: tuple[str, ...] = tuple(
    sorted(name[len("COLORMAP_") :].lower() for name in dir(cv2) if name.startswith("COLORMAP_"))
)

ImageLike = Image.Image | np.ndarray | torch.Tensor
MapLike = torch.Tensor | np.ndarray

# Tolerance for float inputs that should lie in [0, 1] (bilinear resizing and
# de-normalisation round-off overshoot by a few ulps).
_RANGE_TOL = 1e-3
GT_BOX_COLOUR = (0, 200, 0)
PRED_BOX_COLOUR = (230, 0, 0)


@functools.cache
def _colormap_lut(colormap: str) -> torch.Tensor:
    """(256, 3) uint8 RGB look-up table of an OpenCV colour map."""
    if not isinstance(colormap, str):
        raise TypeError(f"colormap must be a string, got {type(colormap).__name__}")
    code = getattr(cv2, f"COLORMAP_{colormap.upper()}", None)
    if code is None:
        raise ValueError(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    ramp = np.arange(256, dtype=np.uint8)[:, None]
    bgr = cv2.applyColorMap(ramp, code)[:, 0, :]
    # OpenCV returns BGR: flip to RGB here so nothing downstream has to remember it.
    return torch.from_numpy(np.ascontiguousarray(bgr[:, ::-1]))


def _stats(values: Sequence[float] | torch.Tensor | None, name: str) -> torch.Tensor | None:
    if values is None:
        return None
    stats = torch.as_tensor(values, dtype=torch.float32).flatten()
    if stats.numel() not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 values, got {stats.numel()}")
    if name == "std" and bool((stats == 0).any()):
        raise ValueError("std must not contain zeros")
    return stats


def image_to_tensor(
    image: ImageLike,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Any supported image -> (H, W, 3) uint8 RGB tensor (on the image's device for tensors)."""
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together")
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(image.convert("RGB")))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(
                f"image as a numpy array must be uint8 HWC, got dtype {image.dtype}; "
                "pass float images as a CHW torch tensor"
            )
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(
                f"image as a numpy array must be HW or HWC (C=1,3,4), got {image.shape}"
            )
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        return torch.from_numpy(np.ascontiguousarray(image[:, :, :3]))
    if isinstance(image, torch.Tensor):
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(
                f"image as a tensor must be CHW with C=1 or 3, got shape {tuple(image.shape)}"
            )
        image = image.detach()
        if image.dtype == torch.uint8:
            if mean is not None:
                raise ValueError("mean/std de-normalisation needs a float image tensor, got uint8")
            return image.expand(3, -1, -1).permute(1, 2, 0).contiguous()
        if not image.is_floating_point():
            raise TypeError(f"image tensor must be float or uint8, got {image.dtype}")
        pixels = image.float()
        mean_t, std_t = _stats(mean, "mean"), _stats(std, "std")
        if mean_t is not None and std_t is not None:
            device = pixels.device
            pixels = pixels * std_t.to(device)[:, None, None] + mean_t.to(device)[:, None, None]
        if not bool(torch.isfinite(pixels).all()):
            raise ValueError("image tensor contains NaN or infinite values")
        low, high = float(pixels.min()), float(pixels.max())
        if low < -_RANGE_TOL or high > 1 + _RANGE_TOL:
            raise ValueError(
                f"float image values must lie in [0, 1] (got [{low:.3g}, {high:.3g}]); "
                "pass mean= and std= to undo a Normalize transform"
            )
        pixels = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
        return pixels.expand(3, -1, -1).permute(1, 2, 0).contiguous()
    raise TypeError(
        "image must be a PIL image, a uint8 HWC numpy array or a CHW torch tensor, "
        f"got {type(image).__name__}"
    )


def map_to_tensor(heatmap: MapLike, name: str = "map") -> torch.Tensor:
    """A 2-D map (allowing leading singleton dims) -> (h, w) float32 tensor in [0, 1]."""
    if isinstance(heatmap, np.ndarray):
        heatmap = torch.from_numpy(np.asarray(heatmap, dtype=np.float32))
    if not isinstance(heatmap, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch tensor or numpy array, got {type(heatmap).__name__}"
        )
    values = heatmap.detach()
    while values.ndim > 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-D (h, w), got shape {tuple(heatmap.shape)}")
    if values.numel() == 0:
        raise ValueError(f"{name} is empty")
    values = values.float()
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < -_RANGE_TOL or high > 1 + _RANGE_TOL:
        raise ValueError(
            f"{name} values must lie in [0, 1] (got [{low:.3g}, {high:.3g}]); "
            "normalise raw CAMs first, e.g. with fcam.cams.normalize or extractor.explain"
        )
    return values.clamp(0, 1)


def blend(rgb: torch.Tensor, heat: torch.Tensor, colormap: str, alpha: float) -> torch.Tensor:
    """Colour ``heat`` (h, w) with ``colormap``, resize to ``rgb`` and blend; uint8 (H, W, 3)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a number in [0, 1], got {type(alpha).__name__}")
    alpha = check_number(alpha, "alpha", non_negative=True, maximum=1.0)
    lut = _colormap_lut(colormap).to(heat.device)
    height, width = rgb.shape[:2]
    if heat.shape != (height, width):
        heat = F.interpolate(
            heat[None, None], size=(height, width), mode="bilinear", align_corners=False
        )[0, 0].clamp(0, 1)
    coloured = lut[(heat * 255).round().long()].float()
    mixed = (1 - alpha) * rgb.to(heat.device).float() + alpha * coloured
    return mixed.round().clamp(0, 255).to(torch.uint8)


@overload
def overlay(
    image: Image.Image,
    map: MapLike,
    colormap: str = ...,
    alpha: float = ...,
    mean: Sequence[float] | torch.Tensor | None = ...,
    std: Sequence[float] | torch.Tensor | None = ...,
) -> Image.Image: ...


@overload
def overlay(
    image: np.ndarray | torch.Tensor,
    map: MapLike,
    colormap: str = ...,
    alpha: float = ...,
    mean: Sequence[float] | torch.Tensor | None = ...,
    std: Sequence[float] | torch.Tensor | None = ...,
) -> np.ndarray: ...


def overlay(
    image: ImageLike,
    map: MapLike,
    colormap: str = "jet",
    alpha: float = 0.5,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
) -> np.ndarray | Image.Image:
    r"""Blend a class activation map onto an image.

    The map is resized to the image with bilinear interpolation (``F.interpolate``), coloured
    with an OpenCV colour map converted to RGB, and blended:

    .. math::

        \text{out} = (1 - \alpha)\,\text{image} + \alpha\,\text{colormap}(\text{map})

    Args:
        image: a PIL image, a ``uint8`` HWC (or HW) numpy array in RGB order, or a CHW tensor
            (float in [0, 1], or ``uint8``). A float tensor that went through
            ``transforms.Normalize`` is restored with ``mean``/``std``.
        map: a 2-D map in [0, 1] (tensor or array; leading singleton dims are dropped), at
            any resolution, e.g. the output of ``extractor.explain`` or ``FCAM.explain``.
        colormap: one of :data:`COLORMAPS` (OpenCV names, e.g. ``"jet"``, ``"viridis"``).
        alpha: opacity of the heat map, in [0, 1] (0 shows only the image).
        mean: per-channel mean of the normalisation to undo (1 or 3 values).
        std: per-channel std of the normalisation to undo (1 or 3 values).

    Returns:
        A PIL RGB image if ``image`` is a PIL image, otherwise an (H, W, 3) ``uint8`` RGB
        numpy array.

    Raises:
        TypeError: if ``image``, ``map``, ``colormap`` or ``alpha`` has an unsupported type.
        ValueError: on bad shapes, values outside [0, 1], NaNs, an unknown colour map, or
            ``mean`` without ``std``.

    Example:
        >>> import numpy as np, torch
        >>> image = np.zeros((4, 4, 3), dtype=np.uint8)
        >>> out = overlay(image, torch.ones(2, 2), alpha=1.0)   # jet(1.0) is dark red
        >>> out[0, 0].tolist()
        [128, 0, 0]
    """
    rgb = image_to_tensor(image, mean, std)
    heat = map_to_tensor(map)
    out = blend(rgb, heat, colormap, alpha).cpu().numpy()
    if isinstance(image, Image.Image):
        return Image.fromarray(out)
    return out



def draw_boxes(tile: Image.Image, boxes: np.ndarray, scale: tuple[float, float],
               colour: tuple[int, int, int]) -> None:
    """Outline ``(N, 4)`` ``x0, y0, x1, y1`` boxes (pixels, multiplied by ``scale``) on ``tile``."""
    draw = ImageDraw.Draw(tile)
    sx, sy = scale
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0 * sx, y0 * sy, x1 * sx, y1 * sy], outline=colour, width=2)
