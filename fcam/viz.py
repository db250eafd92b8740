"""Visualisation: heat-map overlays and side-by-side method comparison grids.

Both functions need only Pillow and OpenCV (runtime dependencies); matplotlib is not used, so
they work on headless machines and in CI.

* :func:`overlay` blends one map onto one image and returns **RGB** pixels. OpenCV colour maps
  are BGR; the conversion is done once, when the look-up table is built.
* :func:`comparison_grid` lays out one row per image: the image, optionally its ground-truth
  mask, then one overlay per method, with optional ground-truth (green) and predicted (red)
  boxes, and saves the grid as a PNG.

Example:
    >>> import torch
    >>> from fcam.viz import overlay
    >>> image = torch.rand(3, 64, 64)            # CHW float in [0, 1]
    >>> heat = torch.rand(8, 8)                  # low-resolution map in [0, 1]
    >>> overlay(image, heat).shape               # resized to the image, RGB uint8
    (64, 64, 3)
"""

from __future__ import annotations

import functools
import io
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, overload

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from fcam.core.io import atomic_write_bytes
from fcam.core.validation import check_number

__all__ = ["COLORMAPS", "comparison_grid", "overlay"]

logger = logging.getLogger(__name__)

#: Names accepted by the ``colormap`` argument (OpenCV colour maps, lower case).
COLORMAPS: tuple[str, ...] = tuple(
    sorted(name[len("COLORMAP_") :].lower() for name in dir(cv2) if name.startswith("COLORMAP_"))
)

ImageLike = Image.Image | np.ndarray | torch.Tensor
MapLike = torch.Tensor | np.ndarray

# Tolerance for float inputs that should lie in [0, 1] (bilinear resizing and
# de-normalisation round-off overshoot by a few ulps).
_RANGE_TOL = 1e-3
_GT_BOX_COLOUR = (0, 200, 0)
_PRED_BOX_COLOUR = (230, 0, 0)


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


def _image_to_tensor(
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


def _map_to_tensor(heatmap: MapLike, name: str = "map") -> torch.Tensor:
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


def _blend(rgb: torch.Tensor, heat: torch.Tensor, colormap: str, alpha: float) -> torch.Tensor:
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
    rgb = _image_to_tensor(image, mean, std)
    heat = _map_to_tensor(map)
    out = _blend(rgb, heat, colormap, alpha).cpu().numpy()
    if isinstance(image, Image.Image):
        return Image.fromarray(out)
    return out


def _as_list(
    items: Any, name: str, expected: int | None = None, item_ndim: int | None = None
) -> list[Any]:
    """Split a batch tensor / array or a sequence into a list of per-image items.

    An array with exactly ``item_ndim`` dimensions is one item, not a batch.
    """
    listed: list[Any]
    if isinstance(items, (torch.Tensor, np.ndarray)) and items.ndim == item_ndim:
        listed = [items]
    elif isinstance(items, (torch.Tensor, np.ndarray)):
        listed = [items[i] for i in range(items.shape[0])] if items.ndim > 0 else []
    elif isinstance(items, Image.Image):
        listed = [items]
    elif isinstance(items, Sequence) and not isinstance(items, str):
        listed = list(items)
    else:
        raise TypeError(
            f"{name} must be a batch tensor/array or a sequence, got {type(items).__name__}"
        )
    if expected is not None and len(listed) != expected:
        raise ValueError(f"{name} has {len(listed)} entries but there are {expected} images")
    return listed


def _boxes_array(boxes: Any, name: str) -> np.ndarray:
    """Per-image boxes -> (N, 4) float array of ``x0, y0, x1, y1`` pixels."""
    if boxes is None:
        return np.zeros((0, 4), dtype=np.float32)
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    array = np.asarray(boxes, dtype=np.float32)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    array = array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array[None]
    if array.shape[-1] != 4:
        raise ValueError(f"{name} must hold boxes as (x0, y0, x1, y1), got shape {array.shape}")
    return array


def _load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _fit_title(
    draw: ImageDraw.ImageDraw, title: str, size: int, width: int
) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, str]:
    """A font (shrunk down to 8 px) and text (ellipsised if needed) that fit ``width`` pixels."""
    for candidate in range(size, 7, -1):
        font = _load_font(candidate)
        if draw.textlength(title, font=font) <= width:
            return font, title
    text = title
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return font, text + "…"


def _draw_boxes(tile: Image.Image, boxes: np.ndarray, scale: tuple[float, float],
                colour: tuple[int, int, int]) -> None:
    draw = ImageDraw.Draw(tile)
    sx, sy = scale
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0 * sx, y0 * sy, x1 * sx, y1 * sy], outline=colour, width=2)


def _save_png(grid: Image.Image, path: str | os.PathLike[str]) -> None:
    """Write atomically: a reader never sees a half-written PNG."""
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    logger.info("saved comparison grid to %s", os.fspath(path))


def comparison_grid(
    images: ImageLike | Sequence[ImageLike],
    maps_by_method: Mapping[str, MapLike | Sequence[MapLike]],
    gt: MapLike | Sequence[MapLike] | None = None,
    boxes: Any = None,
    path: str | os.PathLike[str] | None = None,
    *,
    pred_boxes: Mapping[str, Any] | None = None,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    colormap: str = "jet",
    alpha: float = 0.5,
    tile_size: int | tuple[int, int] | None = None,
) -> Image.Image:
    """Lay out images, ground truth and each method's map overlay in a grid.

    One row per image. Columns: the image, the ground-truth mask (if ``gt`` is given), then
    one :func:`overlay` per entry of ``maps_by_method`` in insertion order. A header row
    carries the column titles. Ground-truth boxes are drawn in green on the image, the mask
    and every overlay; predicted boxes in red on their method's overlay.

    Rendering uses Pillow only, so no display and no matplotlib are needed.

    Args:
        images: a (B, C, H, W) tensor, or a sequence of images of any type accepted by
            :func:`overlay` (a single PIL image counts as one row).
        maps_by_method: ``{method name: maps}`` where maps is a (B, h, w) tensor/array or a
            sequence of B 2-D maps in [0, 1].
        gt: optional ground-truth masks, (B, H, W) or a sequence of B 2-D masks in [0, 1].
        boxes: optional ground-truth boxes in image pixels ``(x0, y0, x1, y1)``: a (B, 4) or
            (B, N, 4) tensor/array, or a sequence of B per-image (4,) / (N, 4) boxes.
        path: if given, the grid is written there as a PNG (atomically; parent folders are
            created).
        pred_boxes: optional ``{method name: boxes}`` in the same format as ``boxes``; each
            name must be a key of ``maps_by_method``.
        mean: per-channel mean to undo on float tensor images (see :func:`overlay`).
        std: per-channel std to undo on float tensor images.
        colormap: colour map name, see :data:`COLORMAPS`.
        alpha: heat-map opacity in [0, 1].
        tile_size: ``(height, width)`` or a single int for square tiles; defaults to the
            first image's size. Other images, masks and their boxes are scaled to it.

    Returns:
        The grid as a PIL RGB image.

    Raises:
        TypeError: on unsupported input types.
        ValueError: on empty inputs, mismatched lengths, unknown method names in
            ``pred_boxes`` or malformed boxes.

    Example:
        >>> import torch
        >>> images = torch.rand(2, 3, 32, 32)
        >>> grid = comparison_grid(images, {"gradcam": torch.rand(2, 4, 4)},
        ...                        boxes=torch.tensor([[4, 4, 20, 20], [0, 0, 31, 31]]))
        >>> grid.size   # 2 columns of 32 px and 2 rows, plus padding and a title row
        (76, 86)
    """
    image_list = _as_list(images, "images", item_ndim=3)
    if not image_list:
        raise ValueError("images is empty")
    if not isinstance(maps_by_method, Mapping):
        raise TypeError(
            f"maps_by_method must be a mapping {{name: maps}}, got {type(maps_by_method).__name__}"
        )
    n = len(image_list)
    methods = {
        str(name): _as_list(maps, f"maps_by_method[{name!r}]", n, item_ndim=2)
        for name, maps in maps_by_method.items()
    }
    if not methods:
        raise ValueError("maps_by_method is empty")
    gt_list = _as_list(gt, "gt", n, item_ndim=2) if gt is not None else None
    box_list = _as_list(boxes, "boxes", n) if boxes is not None else [None] * n
    pred = {}
    for name, method_boxes in (pred_boxes or {}).items():
        if name not in methods:
            raise ValueError(f"pred_boxes has method {name!r} that is not in maps_by_method")
        pred[name] = _as_list(method_boxes, f"pred_boxes[{name!r}]", n)

    rgbs = [_image_to_tensor(image, mean, std) for image in image_list]
    if tile_size is None:
        tile_h, tile_w = rgbs[0].shape[:2]
    elif isinstance(tile_size, int):
        tile_h = tile_w = tile_size
    else:
        tile_h, tile_w = tile_size
    if tile_h <= 0 or tile_w <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")

    titles = ["image"] + (["ground truth"] if gt_list is not None else []) + list(methods)
    pad = 4
    size = max(10, min(16, tile_w // 8))
    header = 20 if tile_w >= 64 else 14
    grid = Image.new(
        "RGB",
        (pad + len(titles) * (tile_w + pad), header + n * (tile_h + pad)),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(grid)
    for col, title in enumerate(titles):
        font, text = _fit_title(draw, title, size, tile_w - 4)
        draw.text((pad + col * (tile_w + pad) + 2, 2), text, fill=(0, 0, 0), font=font)

    for row, rgb in enumerate(rgbs):
        height, width = rgb.shape[:2]
        scale = (tile_w / width, tile_h / height)
        gt_boxes = _boxes_array(box_list[row], "boxes")
        tiles: list[tuple[Image.Image, np.ndarray | None]] = [
            (Image.fromarray(rgb.cpu().numpy()), None)
        ]
        if gt_list is not None:
            mask = (_map_to_tensor(gt_list[row], "gt") * 255).round().to(torch.uint8)
            tiles.append((Image.fromarray(mask.cpu().numpy()).convert("RGB"), None))
        for name, maps in methods.items():
            heat = _map_to_tensor(maps[row], f"maps_by_method[{name!r}]")
            blended = _blend(rgb, heat, colormap, alpha)
            own = _boxes_array(pred[name][row], f"pred_boxes[{name!r}]") if name in pred else None
            tiles.append((Image.fromarray(blended.cpu().numpy()), own))
        for col, (tile, own_boxes) in enumerate(tiles):
            # A mask may have its own resolution: scale boxes by the image size, tiles by resize.
            tile = tile.resize((tile_w, tile_h), Image.Resampling.BILINEAR)
            _draw_boxes(tile, gt_boxes, scale, _GT_BOX_COLOUR)
            if own_boxes is not None:
                _draw_boxes(tile, own_boxes, scale, _PRED_BOX_COLOUR)
            grid.paste(tile, (pad + col * (tile_w + pad), header + row * (tile_h + pad)))

    if path is not None:
        _save_png(grid, path)
    return grid
