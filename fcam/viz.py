"""Visualisation: heat-map overlays and side-by-side method comparison grids.

Both functions need only Pillow and OpenCV (runtime dependencies); matplotlib is not used, so
they work on headless machines and in CI.

* :func:`overlay` blends one map onto one image and returns **RGB** pixels. OpenCV colour maps
  are BGR; the conversion is done once, when the look-up table is built. It is defined in
  :mod:`fcam.core.overlay` so that lower layers (the evaluation report) can draw with it too.
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

import io
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from fcam.core.io import atomic_write_bytes
from fcam.core.overlay import (
    COLORMAPS,
    GT_BOX_COLOUR,
    PRED_BOX_COLOUR,
    ImageLike,
    MapLike,
    blend,
    draw_boxes,
    image_to_tensor,
    map_to_tensor,
    overlay,
)

__all__ = ["COLORMAPS", "comparison_grid", "overlay"]

logger = logging.getLogger(__name__)


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

    rgbs = [image_to_tensor(image, mean, std) for image in image_list]
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
            mask = (map_to_tensor(gt_list[row], "gt") * 255).round().to(torch.uint8)
            tiles.append((Image.fromarray(mask.cpu().numpy()).convert("RGB"), None))
        for name, maps in methods.items():
            heat = map_to_tensor(maps[row], f"maps_by_method[{name!r}]")
            blended = blend(rgb, heat, colormap, alpha)
            own = _boxes_array(pred[name][row], f"pred_boxes[{name!r}]") if name in pred else None
            tiles.append((Image.fromarray(blended.cpu().numpy()), own))
        for col, (tile, own_boxes) in enumerate(tiles):
            # A mask may have its own resolution: scale boxes by the image size, tiles by resize.
            tile = tile.resize((tile_w, tile_h), Image.Resampling.BILINEAR)
            draw_boxes(tile, gt_boxes, scale, GT_BOX_COLOUR)
            if own_boxes is not None:
                draw_boxes(tile, own_boxes, scale, PRED_BOX_COLOUR)
            grid.paste(tile, (pad + col * (tile_w + pad), header + row * (tile_h + pad)))

    if path is not None:
        _save_png(grid, path)
    return grid
