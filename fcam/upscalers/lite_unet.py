"""A lighter F-CAM decoder: 1×1 lateral projections (FPN/DPT style) before one 3×3 conv per level.

F-CAM's published :class:`~fcam.upscalers.unet.UNetDecoder` runs its 3×3 convolutions over the
concatenation of the upsampled decoder tensor and the *full-width* skip feature. On a ResNet-50
that first block alone (3×3 over 2048 + 1024 channels at stride 16) costs about 1.4 GMAC, and the
whole decoder about 4.1 GMAC, i.e. as much as the classifier forward it decodes. This decoder
keeps the same pyramid, widths and interface but:

* projects the incoming decoder tensor to the block width with a 1×1 conv **at the lower
  resolution, before upsampling** (for the first block this is the 2048-channel head),
* projects the skip feature to the block width with a 1×1 lateral conv and **adds** it (as in
  FPN / DPT) instead of concatenating,
* runs a single 3×3 Conv–BN–ReLU per level instead of two, depthwise-separable (depthwise 3×3
  then pointwise 1×1) in blocks at least :data:`SEPARABLE_MIN_WIDTH` wide (the low-resolution,
  compute-bound ones), dense in the narrow high-resolution blocks (memory-bound: a separable
  conv saves no time there),
* keeps F-CAM's 3×3 segmentation head and its initialisation.

With the default widths ``(256, 128, 64, 32, 16)`` the ResNet-50 decoder (224² input) costs
0.51 GMAC and 1.0 M parameters, against 4.06 GMAC and 9.0 M for :class:`UNetDecoder`; ``explain``
then takes 0.37–0.38× the time of pytorch-grad-cam's GradCAM on one CPU core (``unet``: 0.54–0.62×).

.. warning::
    Experimental, not the default. On the synthetic demo (resnet18, two image sizes) it matched
    or beat ``"unet"`` for one decoder-initialisation seed (PxAP 77.3 vs 74.5 and 71.5 vs 70.5)
    but converged to inverted maps (foreground probability high on the background, PxAP below the
    plain CAM) for two of three seeds on both configurations, where ``"unet"`` trained fine with
    every seed. Check the maps of a fitted ``"unet-lite"`` before relying on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fcam.upscalers.unet import UNetDecoder

__all__ = ["LiteDecoderBlock", "LiteUNetDecoder"]


#: Blocks at least this wide use a depthwise-separable 3×3 (depthwise 3×3 then pointwise 1×1):
#: there the dense 3×3 is compute-bound and the separable one ~8× cheaper; narrower blocks sit at
#: high resolution, where the convs are memory-bound and a separable one saves no time.
SEPARABLE_MIN_WIDTH = 64


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def _conv3x3_bn_relu(channels: int) -> nn.Sequential:
    if channels >= SEPARABLE_MIN_WIDTH:
        return nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(*_conv_bn(channels, channels, 3), nn.ReLU(inplace=True))


class LiteDecoderBlock(nn.Module):
    r"""Project, upsample, add a projected skip, then one (separable when wide) 3×3 Conv–BN–ReLU.

    .. math::
        y = \mathrm{CBR}_{3\times3}\Big(\mathrm{ReLU}\big(\mathrm{up}(P_x x) + P_s s\big)\Big)

    with :math:`P_x` a 1×1 Conv–BN to ``out_channels`` applied at the input resolution (identity
    when the widths already match), :math:`P_s` a 1×1 Conv–BN lateral projection of the skip,
    and :math:`\mathrm{up}` the upsampling of :class:`~fcam.upscalers.unet.DecoderBlock`
    (nearest ×2, then a bilinear ``align_corners=True`` resize to the skip's size only when they
    differ).

    Args:
        in_channels: channels of the incoming decoder tensor.
        skip_channels: channels of the skip feature (0 for none).
        out_channels: output channels.

    Example:
        >>> blk = LiteDecoderBlock(8, 4, 6)
        >>> blk(torch.zeros(1, 8, 3, 3), torch.zeros(1, 4, 5, 5)).shape
        torch.Size([1, 6, 5, 5])
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.skip_channels = skip_channels
        self.project = (
            _conv_bn(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )
        self.lateral = _conv_bn(skip_channels, out_channels, 1) if skip_channels > 0 else None
        self.conv = _conv3x3_bn_relu(out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(self.project(x), scale_factor=2, mode="nearest")
        if skip is not None and self.lateral is not None:
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = x + self.lateral(skip.to(x.dtype))
        return self.conv(F.relu(x))


class LiteUNetDecoder(UNetDecoder):
    """Light F-CAM decoder (``upscaler="unet-lite"``): same pyramid and output as :class:`UNetDecoder`.

    Block ``i`` (deepest first) consumes the skip at level ``L - 1 - i`` (``None`` where the
    pyramid has a gap, and always for the last block, i.e. full resolution); widths are resolved
    as in :class:`~fcam.upscalers.unet.UNetDecoder` (last width repeated when the head has more
    levels, the first ``L`` used when fewer). Each block is a :class:`LiteDecoderBlock`; the
    segmentation head is a Conv3×3 to 2 logits (channel 0 background, channel 1 foreground),
    resized bilinearly to the input size when needed.

    Initialisation as :class:`UNetDecoder`: decoder convs kaiming-uniform (fan-in, ReLU), BN
    weight 1 and bias 0, segmentation head xavier-uniform with bias 0.

    Args:
        pyramid: the classifier's :class:`~fcam.upscalers.pyramid.Pyramid`.
        widths: decoder widths, deepest block first.

    Example:
        >>> from fcam.upscalers.pyramid import FeatureLevel, Pyramid
        >>> pyr = Pyramid(FeatureLevel("c", 8, 2), (FeatureLevel("b", 4, 1),))
        >>> dec = LiteUNetDecoder(pyr, widths=(8, 4))
        >>> dec(torch.zeros(2, 8, 3, 4), [torch.zeros(2, 4, 6, 7)], size=(11, 13)).shape
        torch.Size([2, 2, 11, 13])
    """

    block_type = LiteDecoderBlock
