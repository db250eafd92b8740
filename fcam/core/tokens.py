"""Layouts of layer outputs: feature maps, channels-last maps and token sequences.

Vision transformers do not output ``(N, C, h, w)`` maps. Swin stages are channels-last
``(N, h, w, C)``; ViT/DeiT blocks output token sequences ``(N, T, C)`` with ``T = p + h w``,
``p`` *prefix* tokens (class, distillation, register tokens) in front of the patch grid. This
module tells those layouts apart from the output shape and the input image size alone, infers
the token grid (non-square inputs included), converts any of them to ``(N, C, h, w)``, and
picks the default CAM layer of a model from one probe forward (:class:`fcam.core.ModelProbe`).

Rules (no per-architecture tables):

* **Grid fit.** An ``h × w`` grid *fits* an ``H × W`` image when one stride ``s`` (any real
  patch size, not only powers of two) gives ``h ∈ {⌊H/s⌋, ⌈H/s⌉}`` and ``w ∈ {⌊W/s⌋, ⌈W/s⌉}``
  (plain and padded patch embeddings).
* **Layout of a 4-D output** ``(N, a, b, c)``: ``"nchw"`` when ``b × c`` fits the image (or
  when ``a × b`` does not fit either: non-matching 4-D maps stay ``"nchw"`` as before),
  ``"nhwc"`` when only ``a × b`` fits.
* **Layout of a 3-D output** ``(N, T, C)``: ``"tokens"`` with the *smallest* prefix
  ``p ≤`` :data:`MAX_PREFIX` such that ``T - p`` factors into a fitting grid; among several
  factorisations the one with the most equal strides along both axes wins.
* **Default layer.** The last module with a spatial output (any layout, on a grid of the
  input; adaptive pools, whose size does not follow the input, are skipped) in execution order; if
  it is a token sequence the model is a plain ViT, whose patch tokens after the last block's
  attention no longer reach the class score, so the layer is the first token output *inside*
  the last block (its pre-attention norm: ``ln_1`` in torchvision, ``norm1`` in timm).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "LAYOUTS",
    "MAX_PREFIX",
    "GridLayout",
    "default_target_layer",
    "grid_fits",
    "infer_grid",
    "map_level",
    "output_layout",
    "to_nchw",
    "token_blocks",
]

#: The layouts a spatial layer output can have.
LAYOUTS: tuple[str, ...] = ("nchw", "nhwc", "tokens")

#: Largest number of prefix tokens (class + distillation + registers) tried by grid inference.
MAX_PREFIX = 8


@dataclass(frozen=True)
class GridLayout:
    """How a layer output is laid out.

    Attributes:
        layout: ``"nchw"``, ``"nhwc"`` or ``"tokens"``.
        level: :math:`\\log_2` of the output stride, rounded (``4`` for ViT-B/16, also for /14).
        prefix: leading non-patch tokens (``"tokens"`` only).
        grid: ``(h, w)`` of the output for the image it was measured on.
    """

    layout: str
    level: int
    prefix: int = 0
    grid: tuple[int, int] = (0, 0)


def _size(size: Sequence[int] | torch.Size) -> tuple[int, int]:
    return int(size[-2]), int(size[-1])


def _interval(n: int, length: int) -> tuple[float, float]:
    """Open interval of strides ``s`` with ``floor(length/s) == n`` or ``ceil(length/s) == n``."""
    low = length / (n + 1)
    high = math.inf if n <= 1 else length / (n - 1)
    return low, high


def grid_fits(h: int, w: int, size: Sequence[int]) -> bool:
    """Whether an ``h × w`` grid is a patch grid of an image of ``size`` (rule above).

    Example:
        >>> grid_fits(14, 14, (224, 224)), grid_fits(7, 28, (224, 224)), grid_fits(10, 9, (320, 288))
        (True, False, True)
    """
    height, width = _size(size)
    if h < 1 or w < 1 or h > height or w > width:
        return False
    lo_h, hi_h = _interval(h, height)
    lo_w, hi_w = _interval(w, width)
    return max(lo_h, lo_w, 1.0 - 1e-9) < min(hi_h, hi_w)


def map_level(h: int, w: int, size: Sequence[int]) -> int | None:
    """:math:`\\log_2` stride of an ``h × w`` map of an image of ``size`` (both axes within 0.5
    of the same integer), else ``None``; F-CAM's pyramid levels.

    Example:
        >>> map_level(7, 7, (224, 224)), map_level(10, 9, (320, 288)), map_level(9, 20, (320, 288))
        (5, 5, None)
    """
    height, width = _size(size)
    if h < 1 or w < 1:
        return None
    rh, rw = math.log2(height / h), math.log2(width / w)
    lh, lw = round(rh), round(rw)
    if lh != lw or lh < 0 or abs(rh - lh) > 0.5 or abs(rw - lw) > 0.5:
        return None
    return lh


def _divisor_pairs(n: int) -> list[tuple[int, int]]:
    pairs = []
    for h in range(1, math.isqrt(n) + 1):
        if n % h == 0:
            pairs.append((h, n // h))
            if h != n // h:
                pairs.append((n // h, h))
    return pairs


def infer_grid(
    tokens: int, size: Sequence[int], prefix: int | None = None, *, max_prefix: int = MAX_PREFIX
) -> tuple[int, tuple[int, int]]:
    """``(prefix, (h, w))`` of a sequence of ``tokens`` tokens from an image of ``size``.

    Example:
        >>> infer_grid(197, (224, 224))                # ViT-B/16: class token + 14 x 14
        (1, (14, 14))
        >>> infer_grid(198, (224, 224))                # DeiT distilled: class + distillation
        (2, (14, 14))
        >>> infer_grid(1 + 20 * 18, (320, 288))        # non-square input
        (1, (20, 18))
        >>> infer_grid(261, (224, 224), prefix=5)      # 4 registers + class, patch 14
        (5, (16, 16))

    Args:
        tokens: sequence length ``T``.
        size: ``(H, W)`` of the input image (or any shape ending with it).
        prefix: the known number of prefix tokens; ``None`` tries ``0, 1, ..., max_prefix``.
        max_prefix: largest prefix tried.

    Returns:
        The prefix and the grid.

    Raises:
        ValueError: when no prefix leaves a fitting grid (the message says to pass a
            ``reshape_transform``).
    """
    candidates = [prefix] if prefix is not None else list(range(max_prefix + 1))
    height, width = _size(size)
    for p in candidates:
        count = tokens - p
        if count < 1:
            break
        fits = [hw for hw in _divisor_pairs(count) if grid_fits(hw[0], hw[1], (height, width))]
        if fits:
            best = min(fits, key=lambda hw: (abs(math.log(height / hw[0]) - math.log(width / hw[1])), hw))
            return p, best
    tried = f"prefix {prefix}" if prefix is not None else f"prefixes 0..{max_prefix}"
    raise ValueError(
        f"cannot arrange {tokens} tokens into a patch grid of a {height}x{width} image "
        f"(tried {tried}); pass reshape_transform=... (e.g. fcam.cams.vit_reshape_transform "
        "with prefix_tokens= and grid_size=)"
    )


def output_layout(shape: Sequence[int] | torch.Size | None, size: Sequence[int]) -> GridLayout | None:
    """The :class:`GridLayout` of a layer output of ``shape`` for an input of ``size``, or
    ``None`` when the output is not spatial (vectors, attention matrices of odd shapes...).

    A 4-D output whose last two axes are not a grid of the image stays ``"nchw"`` unless its
    middle axes are (so convolutional maps are never reinterpreted); its level is then ``-1``.

    Example:
        >>> output_layout((2, 96, 80, 72), (320, 288))
        GridLayout(layout='nchw', level=2, prefix=0, grid=(80, 72))
        >>> output_layout((2, 80, 72, 96), (320, 288))
        GridLayout(layout='nhwc', level=2, prefix=0, grid=(80, 72))
        >>> output_layout((2, 197, 768), (224, 224))
        GridLayout(layout='tokens', level=4, prefix=1, grid=(14, 14))
        >>> output_layout((2, 1000), (224, 224)) is None
        True
    """
    if shape is None:
        return None
    dims = [int(d) for d in shape]
    if len(dims) == 4:
        a, b, c = dims[1:]
        if grid_fits(b, c, size) or not grid_fits(a, b, size):
            if b * c <= 1:
                return None
            level = map_level(b, c, size)
            return GridLayout("nchw", -1 if level is None else level, 0, (b, c))
        level = map_level(a, b, size)
        if a * b <= 1:
            return None
        return GridLayout("nhwc", -1 if level is None else level, 0, (a, b))
    if len(dims) == 3:
        try:
            prefix, grid = infer_grid(dims[1], size)
        except ValueError:
            return None
        if grid[0] * grid[1] <= 1:
            return None
        level = map_level(grid[0], grid[1], size)
        return GridLayout("tokens", -1 if level is None else level, prefix, grid)
    return None


def to_nchw(x: Tensor, layout: str, size: Sequence[int], prefix: int = 0) -> Tensor:
    """Convert a layer output to a ``(N, C, h, w)`` map (a view when possible).

    Example:
        >>> to_nchw(torch.zeros(2, 1 + 20 * 18, 8), "tokens", (320, 288), prefix=1).shape
        torch.Size([2, 8, 20, 18])
        >>> to_nchw(torch.zeros(2, 7, 5, 8), "nhwc", (224, 160)).shape
        torch.Size([2, 8, 7, 5])

    Args:
        x: the output.
        layout: one of :data:`LAYOUTS`.
        size: ``(H, W)`` of the input image (the token grid is inferred from it).
        prefix: prefix tokens to drop (``"tokens"``).

    Raises:
        ValueError: an unknown layout, or a shape that does not match it.
    """
    if layout == "nchw":
        if x.ndim != 4:
            raise ValueError(f"expected an (N, C, h, w) map, got shape {tuple(x.shape)}")
        return x
    if layout == "nhwc":
        if x.ndim != 4:
            raise ValueError(f"expected an (N, h, w, C) map, got shape {tuple(x.shape)}")
        return x.permute(0, 3, 1, 2)
    if layout == "tokens":
        if x.ndim != 3:
            raise ValueError(f"expected (N, T, C) tokens, got shape {tuple(x.shape)}")
        _, (h, w) = infer_grid(int(x.shape[1]), size, prefix)
        return x[:, prefix:, :].transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


_INDEXED = re.compile(r"\d+$")


def token_blocks(model: nn.Module, probe: Any) -> list[str]:
    """Names of the repeated transformer blocks of a plain (single-grid) token model, in order.

    Blocks are the children of one parent, of one class, whose names end with an index
    (``blocks.3``, ``encoder.layers.encoder_layer_3``) and whose outputs are token sequences
    of one shape; the largest such group wins (containers before leaves on ties). Empty
    when there is none.

    Args:
        model: the model.
        probe: its :class:`fcam.core.ModelProbe`.
    """
    modules = dict(model.named_modules())
    groups: dict[tuple[str, str, tuple[int, ...]], list[tuple[int, str]]] = {}
    for event in probe.events:
        if not event.name or event.shape is None or len(event.shape) != 3:
            continue
        parent, _, leaf = event.name.rpartition(".")
        if not _INDEXED.search(leaf) or output_layout(event.shape, probe.size) is None:
            continue
        key = (parent, type(modules[event.name]).__name__, tuple(event.shape))
        groups.setdefault(key, []).append((event.order, event.name))
    if not groups:
        return []

    def rank(item: tuple[tuple[str, str, tuple[int, ...]], list[tuple[int, str]]]) -> tuple[int, bool, int]:
        members = item[1]
        container = any(True for _ in modules[members[0][1]].children())
        return (len(members), container, max(o for o, _ in members))

    best = max(groups.items(), key=rank)[1]
    return [name for _, name in sorted(best)]


_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _resamples(module: nn.Module | None) -> bool:
    """Adaptive pools output a fixed size whatever the input: never a feature of the image."""
    return isinstance(module, _ADAPTIVE)


def default_target_layer(model: nn.Module, probe: Any) -> tuple[str, GridLayout]:
    """The default CAM layer of ``model`` and its layout (rule in the module docstring).

    Example:
        >>> import torchvision
        >>> from fcam.core import probe_model
        >>> vit = torchvision.models.vit_b_16(weights=None, image_size=32)
        >>> default_target_layer(vit, probe_model(vit, size=(32, 32)))[0]
        'encoder.layers.encoder_layer_11.ln_1'

    Args:
        model: the classifier.
        probe: its :class:`fcam.core.ModelProbe`.

    Raises:
        ValueError: when no module outputs a spatial map or token grid (the message says to
            pass ``target_layer``).
    """
    last: tuple[str, GridLayout] | None = None
    modules = dict(model.named_modules())
    for event in reversed(probe.events):
        layout = output_layout(event.shape, probe.size) if event.name else None
        if layout is None or layout.level < 0 or _resamples(modules.get(event.name)):
            continue
        last = (event.name, layout)
        break
    if last is None:
        raise ValueError(
            f"no layer of {type(model).__name__} outputs a spatial map (N, C, h, w), a "
            "channels-last map (N, h, w, C) or a token grid (N, T, C); pass target_layer=... "
            "(and reshape_transform=... for outputs of another layout)"
        )
    if last[1].layout != "tokens":
        return last
    blocks = token_blocks(model, probe)
    if not blocks:
        return last
    block = blocks[-1]
    inside = [
        e for e in probe.events
        if e.name.startswith(block + ".") and output_layout(e.shape, probe.size) is not None
        and output_layout(e.shape, probe.size).layout == "tokens"  # type: ignore[union-attr]
    ]
    if inside:
        first = min(inside, key=lambda e: e.order)
        return first.name, output_layout(first.shape, probe.size)  # type: ignore[return-value]
    if len(blocks) > 1:
        previous = probe.event(blocks[-2])
        return blocks[-2], output_layout(previous.shape, probe.size)  # type: ignore[union-attr,return-value]
    return last
