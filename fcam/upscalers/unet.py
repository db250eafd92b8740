"""U-Net decoder of F-CAM (Belharbi et al., WACV 2022, ``UnetFCAMDecoder``).

The decoder turns the classifier's head feature plus its skip features into 2-channel
(background, foreground) logits at the input resolution. One :class:`DecoderBlock` per stride
level of the head: a head of stride :math:`2^L` gets :math:`L` blocks, so the output of the last
block is at stride 1 (then resized to the exact input size, which matters for odd sizes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fcam.upscalers.class_head import apply_head
from fcam.upscalers.pyramid import Pyramid

__all__ = [
    "DEFAULT_WIDTHS",
    "DecoderBlock",
    "UNetDecoder",
    "conv_bn_relu",
    "decode_blocks",
    "init_decoder_weights",
    "upsample_to",
]

#: Decoder widths of F-CAM for depth-5 encoders (deepest block first).
DEFAULT_WIDTHS: tuple[int, ...] = (256, 128, 64, 32, 16)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """``Conv (no bias, "same" padding) - BatchNorm - ReLU``, the layer every decoder is built of."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def upsample_to(x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """F-CAM's decoder upsampling: nearest ×2, then a bilinear ``align_corners=True`` resize to
    ``skip``'s size only when they differ (odd input sizes, unpadded architectures)."""
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    if skip is not None and x.shape[-2:] != skip.shape[-2:]:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
    return x


class DecoderBlock(nn.Module):
    r"""Upsample, concatenate a skip feature, then two Conv3×3–BN–ReLU layers.

    .. math::
        y = \mathrm{CBR}_2\big(\mathrm{CBR}_1([\,\mathrm{up}(x),\ s\,])\big),\quad
        \mathrm{up}(x) = \mathrm{resize}_{\text{bilinear, ac}}(\mathrm{nearest}_{\times2}(x),
        \ \mathrm{size}(s))

    The bilinear resize (``align_corners=True``) only runs when the ×2 map and the skip
    differ in size (odd input sizes, unpadded architectures), as in F-CAM.

    Args:
        in_channels: channels of the incoming decoder tensor.
        skip_channels: channels of the skip feature (0 for none).
        out_channels: output channels.

    Example:
        >>> blk = DecoderBlock(8, 4, 6)
        >>> blk(torch.zeros(1, 8, 3, 3), torch.zeros(1, 4, 5, 5)).shape
        torch.Size([1, 6, 5, 5])
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.skip_channels = skip_channels
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = upsample_to(x, skip)
        if skip is not None:
            x = torch.cat([x, skip.to(x.dtype)], dim=1)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """F-CAM decoder: head feature + skips -> 2-channel logits at the input size.

    Block ``i`` (deepest first) consumes the skip at level ``L - 1 - i`` (``None`` where the
    pyramid has a gap, and always for the last block, i.e. full resolution). Widths come from
    ``widths`` (F-CAM: ``(256, 128, 64, 32, 16)``); when the head has more than ``len(widths)``
    levels the last width is repeated, when fewer the first ``L`` widths are used. The
    segmentation head is a Conv3×3 to 2 logits (channel 0 background, channel 1 foreground).

    Initialisation as in F-CAM: decoder convs kaiming-uniform (fan-in, ReLU), BN weight 1 and
    bias 0, segmentation head xavier-uniform with bias 0.

    Args:
        pyramid: the classifier's :class:`~fcam.upscalers.pyramid.Pyramid`.
        widths: decoder widths, deepest block first (``None``: :attr:`default_widths`).

    Example:
        >>> from fcam.upscalers.pyramid import FeatureLevel, Pyramid
        >>> pyr = Pyramid(FeatureLevel("c", 8, 2), (FeatureLevel("b", 4, 1),))
        >>> dec = UNetDecoder(pyr, widths=(8, 4))
        >>> dec(torch.zeros(2, 8, 3, 4), [torch.zeros(2, 4, 6, 7)], size=(11, 13)).shape
        torch.Size([2, 2, 11, 13])
    """

    #: Block class, one instance per stride level (subclasses swap in lighter blocks).
    block_type: ClassVar[type[nn.Module]] = DecoderBlock
    #: Widths used when ``widths=None``.
    default_widths: ClassVar[tuple[int, ...]] = DEFAULT_WIDTHS

    def __init__(self, pyramid: Pyramid, widths: Sequence[int] | None = None) -> None:
        super().__init__()
        widths = [int(w) for w in (self.default_widths if widths is None else widths)]
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths}")
        n = pyramid.head.level
        widths = (widths + [widths[-1]] * n)[:n]
        skip_ch = [s.channels if s is not None else 0 for s in pyramid.skips] + [0]
        in_ch = [pyramid.head.channels] + widths[:-1]
        self.blocks = nn.ModuleList(
            self.block_type(i, s, o) for i, s, o in zip(in_ch, skip_ch, widths, strict=True)
        )
        self.seg_head = nn.Conv2d(widths[-1], 2, kernel_size=3, padding=1)
        self._init_weights()

    def _init_weights(self) -> None:
        init_decoder_weights(self.blocks, self.seg_head)

    def forward(
        self,
        head: torch.Tensor,
        skips: Sequence[torch.Tensor | None],
        size: tuple[int, int],
        classes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode.

        Args:
            head: ``(N, C_head, h, w)`` head feature.
            skips: skip features deepest first, one per block except the last (entries may be
                ``None``); a shorter list is padded with ``None``.
            size: ``(H, W)`` of the input image.
            classes: ``(N,)`` explained class per image, for a decoder built with a
                :class:`~fcam.upscalers.class_head.ClassConditionalHead`.

        Returns:
            ``(N, 2, H, W)`` logits.
        """
        return decode_blocks(self.blocks, self.seg_head, head, skips, size, classes)


def init_decoder_weights(body: nn.Module, seg_head: nn.Conv2d, fg_prior: float | None = None) -> None:
    """F-CAM's initialisation, shared by every decoder: convolutions of ``body``
    kaiming-uniform (fan-in, ReLU) with zero bias, BatchNorm weight 1 and bias 0, then the
    segmentation head xavier-uniform with zero bias.

    With ``fg_prior=p`` the segmentation head instead gets zero weights and the bias
    ``(0, log(p / (1 - p)))``, so the untrained decoder gives foreground probability ``p`` at
    every pixel (the head's weights still get gradients from the first step)."""
    for m in body.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if fg_prior is None:
        nn.init.xavier_uniform_(seg_head.weight)
        nn.init.zeros_(seg_head.bias)  # type: ignore[arg-type]
        return
    if not 0.0 < fg_prior < 1.0:
        raise ValueError(f"fg_prior must be in (0, 1), got {fg_prior!r}")
    nn.init.zeros_(seg_head.weight)
    with torch.no_grad():
        seg_head.bias.copy_(torch.tensor([0.0, math.log(fg_prior / (1.0 - fg_prior))]))  # type: ignore[union-attr]


def decode_blocks(
    blocks: nn.ModuleList,
    seg_head: nn.Module,
    head: torch.Tensor,
    skips: Sequence[torch.Tensor | None],
    size: tuple[int, int],
    classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the blocks deepest first (skips padded with ``None``), the segmentation head (for
    ``classes`` when it is class-conditional), and resize the logits to ``size`` when the last
    block's map differs (odd input sizes)."""
    x = head
    padded = list(skips) + [None] * (len(blocks) - len(skips))
    for block, skip in zip(blocks, padded, strict=False):
        x = block(x, skip)
    logits = apply_head(seg_head, x, classes)
    if logits.shape[-2:] != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)
    return logits
