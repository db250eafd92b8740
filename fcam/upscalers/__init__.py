"""Learnable upscalers: F-CAM's U-Net decoder on the classifier's own feature pyramid.

- :func:`discover_pyramid` finds the head (CAM layer) and one skip feature per stride.
- :func:`capture_features` collects those features with context-managed hooks.
- :class:`UNetDecoder` (``"unet"``, F-CAM's published decoder) and :class:`LiteUNetDecoder`
  (``"unet-lite"``, 1×1 lateral projections, ~5× fewer MACs), built by :func:`build_upscaler`,
  map them to 2-channel logits at the input resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fcam.core.hooks import capture_features
from fcam.core.layers import PROBE_SIZE
from fcam.upscalers.lite_unet import LiteDecoderBlock, LiteUNetDecoder
from fcam.upscalers.pyramid import FeatureLevel, Pyramid, discover_pyramid, module_name
from fcam.upscalers.unet import DEFAULT_WIDTHS, DecoderBlock, UNetDecoder

__all__ = [
    "DEFAULT_WIDTHS",
    "PROBE_SIZE",
    "DecoderBlock",
    "FeatureLevel",
    "LiteDecoderBlock",
    "LiteUNetDecoder",
    "Pyramid",
    "UNetDecoder",
    "available",
    "build_upscaler",
    "capture_features",
    "discover_pyramid",
    "module_name",
]

_UPSCALERS = {"unet": UNetDecoder, "unet-lite": LiteUNetDecoder}


def available() -> list[str]:
    """Names accepted by :func:`build_upscaler`."""
    return list(_UPSCALERS)


def build_upscaler(name: str, pyramid: Pyramid, widths: Sequence[int] = DEFAULT_WIDTHS) -> nn.Module:
    """Build the decoder called ``name`` for ``pyramid``.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in _UPSCALERS:
        raise ValueError(f"upscaler must be one of {available()}, got {name!r}")
    return _UPSCALERS[name](pyramid, widths=widths)
