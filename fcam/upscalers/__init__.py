"""Learnable upscalers: F-CAM's U-Net decoder on the classifier's own feature pyramid.

- :func:`discover_pyramid` finds the head (CAM layer) and one skip feature per stride.
- :func:`capture_features` collects those features with context-managed hooks.
- :class:`LiteUNetDecoder` (``"unet-lite"``, the default: 1×1 reductions of the head and skips,
  half widths, ~8× fewer MACs) and :class:`UNetDecoder` (``"unet"``, F-CAM's published decoder),
  built by :func:`build_upscaler`, map them to 2-channel logits at the input resolution.
- :class:`DPTDecoder` (``"dpt"``) reassembles the single token grid of a plain ViT at four
  strides with learned resampling and adds an image-guidance stem; :func:`build_upscaler` picks
  it for such pyramids whatever the requested name (see ``docs/concepts/transformers.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

from torch import nn

from fcam.core.hooks import capture_features
from fcam.core.layers import PROBE_SIZE
from fcam.core.validation import check_int
from fcam.upscalers.class_head import ClassConditionalHead
from fcam.upscalers.dpt import DPTDecoder, Reassemble
from fcam.upscalers.lite_unet import (
    FOREGROUND_PRIOR,
    LITE_WIDTHS,
    LiteDecoderBlock,
    LiteUNetDecoder,
)
from fcam.upscalers.pyramid import FeatureLevel, Pyramid, discover_pyramid, module_name
from fcam.upscalers.unet import DEFAULT_WIDTHS, DecoderBlock, UNetDecoder

__all__ = [
    "DEFAULT_WIDTHS",
    "FOREGROUND_PRIOR",
    "LITE_WIDTHS",
    "PROBE_SIZE",
    "ClassConditionalHead",
    "DPTDecoder",
    "DecoderBlock",
    "FeatureLevel",
    "LiteDecoderBlock",
    "LiteUNetDecoder",
    "Pyramid",
    "Reassemble",
    "UNetDecoder",
    "available",
    "build_upscaler",
    "capture_features",
    "decoder_name",
    "default_widths",
    "discover_pyramid",
    "module_name",
]

logger = logging.getLogger(__name__)

_UPSCALERS: dict[str, type[nn.Module]] = {
    "unet": UNetDecoder,
    "unet-lite": LiteUNetDecoder,
    "dpt": DPTDecoder,
}


def available() -> list[str]:
    """Names accepted by :func:`build_upscaler`."""
    return list(_UPSCALERS)


def _decoder_class(name: str) -> type[nn.Module]:
    if name not in _UPSCALERS:
        raise ValueError(f"upscaler must be one of {available()}, got {name!r}")
    return _UPSCALERS[name]


def default_widths(name: str) -> tuple[int, ...]:
    """Widths the decoder called ``name`` uses when none are given.

    Raises:
        ValueError: for an unknown name.
    """
    # The registry is typed as nn.Module classes; every decoder defines default_widths.
    return tuple(getattr(_decoder_class(name), "default_widths"))  # noqa: B009


def decoder_name(name: str, pyramid: Pyramid) -> str:
    """The decoder :func:`build_upscaler` builds for ``name`` on ``pyramid``.

    A pyramid whose features are read at another stride than their own (a plain ViT:
    :attr:`Pyramid.resampled`) always gets ``"dpt"``, the only decoder with learned resampling
    and image guidance.

    Raises:
        ValueError: for an unknown name.
    """
    _decoder_class(name)
    return "dpt" if pyramid.resampled else name


def build_upscaler(
    name: str, pyramid: Pyramid, widths: Sequence[int] | None = None, num_classes: int = 0
) -> nn.Module:
    """Build the decoder called ``name`` (:func:`decoder_name`: ``"dpt"`` for a plain ViT, the
    choice is logged) for ``pyramid``; ``widths=None`` takes that decoder's
    ``default_widths``. With ``num_classes > 0`` its segmentation head becomes a
    :class:`ClassConditionalHead` and its forward takes ``classes=``.

    Raises:
        ValueError: for an unknown name or a negative ``num_classes``.
    """
    built = decoder_name(name, pyramid)
    if built != name:
        logger.info("upscaler %r: single-grid token model, using the %r decoder", name, built)
    check_int(num_classes, "num_classes", minimum=0)
    decoder = _UPSCALERS[built](pyramid, widths=widths)  # type: ignore[call-arg]
    if num_classes:
        # The head checks at run time that it wraps a Conv2d.
        decoder.seg_head = ClassConditionalHead(cast(nn.Module, decoder.seg_head), num_classes)
    return decoder
