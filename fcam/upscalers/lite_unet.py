"""The default F-CAM decoder: 1×1 reductions of the head and skips, then U-Net blocks of half width.

F-CAM's published :class:`~fcam.upscalers.unet.UNetDecoder` runs its 3×3 convolutions over the
concatenation of the upsampled decoder tensor and the *full-width* skip feature. On a ResNet-50
that first block alone (3×3 over 2048 + 1024 channels at stride 16) costs about 1.4 GMAC, and the
whole decoder about 4.1 GMAC, i.e. as much as the classifier forward it decodes; ``explain``
then cannot get below about 0.55× the time of a Grad-CAM. This decoder keeps the U-Net's
pyramid, concatenation and two 3×3 Conv–BN–ReLU per level, but:

* reduces the incoming decoder tensor to the block width with a 1×1 Conv–BN–ReLU **at the lower
  resolution, before upsampling** (for the first block this is the 2048-channel head),
* reduces the skip feature to the block width with a 1×1 Conv–BN–ReLU (lateral) before the
  concatenation, so the 3×3 convs see ``2 × width`` channels instead of ``width + C_skip``,
* uses half of F-CAM's widths, :data:`LITE_WIDTHS` ``(128, 64, 32, 16, 8)``,
* starts from "nothing is foreground": the segmentation head's weights are zero and its bias
  gives every pixel the foreground probability :data:`FOREGROUND_PRIOR`
  (:func:`~fcam.upscalers.unet.init_decoder_weights`).

With a ResNet-50 at 224² it costs 0.52 GMAC and 1.0 M parameters (``UNetDecoder``: 4.06 GMAC,
9.0 M), and ``explain`` takes 0.38–0.39× the time of pytorch-grad-cam's GradCAM
(``benchmarks/bench_explain.py``; ``"unet"``: 0.59–0.61×).

Why the prior: the dense-CRF loss pulls every pixel towards the label of its similar neighbours,
so from a map that starts mostly foreground it drives the whole image to foreground faster than
the few background seeds (10 per image, scattered) can carve the background out, while a compact
foreground grown from the foreground seeds is cheap for the CRF. The published decoder's random
initial map happens to lean either way; with this narrower decoder a map that started mostly
foreground collapsed to all-foreground in the first epoch for 1 of 3 initialisation seeds. The
measurements are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from fcam.upscalers.unet import UNetDecoder, conv_bn_relu, init_decoder_weights, upsample_to

__all__ = ["FOREGROUND_PRIOR", "LITE_WIDTHS", "LiteDecoderBlock", "LiteUNetDecoder"]

#: Default widths of :class:`LiteUNetDecoder`, deepest block first (half of F-CAM's).
LITE_WIDTHS: tuple[int, ...] = (128, 64, 32, 16, 8)

#: Foreground probability of every pixel of an untrained :class:`LiteUNetDecoder`.
FOREGROUND_PRIOR = 0.25


class LiteDecoderBlock(nn.Module):
    r"""Reduce, upsample, concatenate a reduced skip, then two Conv3×3–BN–ReLU layers.

    .. math::
        y = \mathrm{CBR}^{3\times3}_2\Big(\mathrm{CBR}^{3\times3}_1\big(
        [\,\mathrm{up}(R_x x),\ R_s s\,]\big)\Big)

    with :math:`R_x` a 1×1 Conv–BN–ReLU to ``out_channels`` applied at the input resolution
    (identity when the widths already match), :math:`R_s` a 1×1 Conv–BN–ReLU of the skip to
    ``out_channels``, and :math:`\mathrm{up}` the upsampling of
    :class:`~fcam.upscalers.unet.DecoderBlock` (nearest ×2, then a bilinear
    ``align_corners=True`` resize to the skip's size only when they differ).

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
        self.reduce = (
            conv_bn_relu(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )
        self.lateral = conv_bn_relu(skip_channels, out_channels, 1) if skip_channels > 0 else None
        joined = out_channels * (2 if self.lateral is not None else 1)
        self.conv1 = conv_bn_relu(joined, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.lateral is None:
            skip = None
        x = upsample_to(self.reduce(x), skip)
        if skip is not None and self.lateral is not None:
            x = torch.cat([x, self.lateral(skip.to(x.dtype))], dim=1)
        return self.conv2(self.conv1(x))


class LiteUNetDecoder(UNetDecoder):
    """F-CAM's default decoder (``upscaler="unet-lite"``): same pyramid and output as :class:`UNetDecoder`.

    Block ``i`` (deepest first) consumes the skip at level ``L - 1 - i`` (``None`` where the
    pyramid has a gap, and always for the last block, i.e. full resolution); widths are resolved
    as in :class:`~fcam.upscalers.unet.UNetDecoder` (last width repeated when the head has more
    levels, the first ``L`` used when fewer). Each block is a :class:`LiteDecoderBlock`; the
    segmentation head is a Conv3×3 to 2 logits (channel 0 background, channel 1 foreground),
    resized bilinearly to the input size when needed.

    Initialisation: decoder convs kaiming-uniform (fan-in, ReLU), BN weight 1 and bias 0, as in
    F-CAM; the segmentation head has zero weights and a bias giving foreground probability
    :data:`FOREGROUND_PRIOR` everywhere (see the module docstring for why).

    Args:
        pyramid: the classifier's :class:`~fcam.upscalers.pyramid.Pyramid`.
        widths: decoder widths, deepest block first (``None``: :data:`LITE_WIDTHS`).

    Example:
        >>> from fcam.upscalers.pyramid import FeatureLevel, Pyramid
        >>> pyr = Pyramid(FeatureLevel("c", 8, 2), (FeatureLevel("b", 4, 1),))
        >>> dec = LiteUNetDecoder(pyr, widths=(8, 4))
        >>> out = dec(torch.zeros(2, 8, 3, 4), [torch.zeros(2, 4, 6, 7)], size=(11, 13))
        >>> out.shape, round(out.softmax(1)[0, 1, 0, 0].item(), 2)
        (torch.Size([2, 2, 11, 13]), 0.25)
    """

    block_type = LiteDecoderBlock
    default_widths: ClassVar[tuple[int, ...]] = LITE_WIDTHS

    def _init_weights(self) -> None:
        init_decoder_weights(self.blocks, self.seg_head, fg_prior=FOREGROUND_PRIOR)
