r"""DPT-style decoder for plain vision transformers (one token grid), with image guidance.

A plain ViT/DeiT has a single token grid at its patch stride :math:`2^g`; its pyramid
(:func:`~fcam.upscalers.discover_pyramid`) holds the CAM layer (head, read at level
:math:`g + 1`) and the outputs of three earlier blocks read at levels :math:`g, g - 1, g - 2`,
each recorded with its own ``grid_level`` :math:`g`. :class:`DPTDecoder` follows DPT's
*reassemble* and *fusion* stages (Ranftl et al., ICCV 2021; ``isl-org/DPT``,
``dpt/vit.py``/``dpt/blocks.py``), sized for F-CAM:

* **Reassemble** (per feature): tokens -> ``(N, C, h, w)`` grid (prefix tokens dropped; done
  by :meth:`~fcam.upscalers.Pyramid.maps` before the decoder), a 1×1 projection to the width
  of its level, then a *learned* resampling by :math:`2^{\,level - g}`: a transposed
  convolution (kernel = stride = the factor) to go up, a strided 3×3 convolution to go down.
* **Fusion** (deepest first, as in DPT's ``FeatureFusionBlock`` and F-CAM's lite U-Net): the
  running map is projected (1×1) to the next width, upsampled ×2 (bilinear), added to the
  reassembled feature of that level, and refined by one 3×3 Conv–BN–ReLU.
* **Image guidance** (what DPT lacks and F-CAM needs for sharp edges at input resolution): a
  light convolutional stem on the (normalised) RGB image, trained with the decoder, gives
  feature maps at stride 2 and stride 1 that are fused like skips. The decoder therefore
  declares ``needs_images = True``; :class:`fcam.FCAM` passes ``images=``.
* A 1×1 segmentation head gives the 2 logits (background, foreground) at the input size.

The classifier stays frozen and the losses are F-CAM's; only this module is trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fcam.upscalers.class_head import apply_head
from fcam.upscalers.pyramid import FeatureLevel, Pyramid
from fcam.upscalers.unet import DEFAULT_WIDTHS, conv_bn_relu, init_decoder_weights

__all__ = ["DPTDecoder", "Reassemble"]


class Reassemble(nn.Module):
    """One feature to the width and stride of its decoder level (DPT's *reassemble*).

    Args:
        feature: the pyramid entry (``level`` = where it is read, ``source_level`` = its own).
        width: output channels.

    Example:
        >>> from fcam.upscalers.pyramid import FeatureLevel
        >>> r = Reassemble(FeatureLevel("b", 8, 2, "tokens", 1, 4), 6)
        >>> r(torch.zeros(1, 8, 3, 5)).shape
        torch.Size([1, 6, 12, 20])
    """

    def __init__(self, feature: FeatureLevel, width: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(feature.channels, width, 1)
        shift = feature.source_level - feature.level
        self.resample: nn.Module
        if shift > 0:  # finer than the token grid: learned upsampling
            factor = 2**shift
            self.resample = nn.ConvTranspose2d(width, width, factor, stride=factor)
        elif shift < 0:  # coarser: strided convolution
            self.resample = nn.Conv2d(width, width, 3, stride=2 ** (-shift), padding=1)
        else:
            self.resample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resample(self.project(x))


class DPTDecoder(nn.Module):
    """Reassembled token pyramid + image stem -> 2-channel logits at the input size.

    Widths are read deepest first as in :class:`~fcam.upscalers.UNetDecoder`: level
    :math:`L` (the head) gets ``widths[0]``, level :math:`L - i` gets ``widths[i]`` (the last
    width is repeated down to level 0, the image stem's full-resolution level).

    Args:
        pyramid: the classifier's :class:`~fcam.upscalers.Pyramid` (any pyramid works; features
            without ``grid_level`` are read as they are).
        widths: decoder widths, deepest first.
        in_channels: image channels of the stem.

    Example:
        >>> from fcam.upscalers.pyramid import FeatureLevel, Pyramid
        >>> tok = lambda n, lvl: FeatureLevel(n, 8, lvl, "tokens", 1, 2)
        >>> pyr = Pyramid(tok("head", 3), (tok("b1", 2), tok("b0", 1)))
        >>> dec = DPTDecoder(pyr, widths=(8, 8, 4))
        >>> grid = torch.zeros(2, 8, 3, 4)
        >>> dec(grid, [grid, grid], (13, 16), images=torch.zeros(2, 3, 13, 16)).shape
        torch.Size([2, 2, 13, 16])
    """

    needs_images = True
    #: Widths used when ``widths=None``.
    default_widths: ClassVar[tuple[int, ...]] = DEFAULT_WIDTHS

    def __init__(
        self, pyramid: Pyramid, widths: Sequence[int] | None = None, *, in_channels: int = 3
    ) -> None:
        super().__init__()
        widths = [int(w) for w in (self.default_widths if widths is None else widths)]
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths}")
        top = pyramid.head.level
        if top < 1:
            raise ValueError(f"the pyramid head must have a stride >= 2, got level {top}")
        width = (widths + [widths[-1]] * (top + 1))[: top + 1]  # width[i]: level top - i
        self.levels = top
        self.head = Reassemble(pyramid.head, width[0])
        skips = list(pyramid.skips) + [None] * (top - 1 - len(pyramid.skips))
        self.skips = nn.ModuleList(
            nn.Identity() if s is None else Reassemble(s, width[i + 1]) for i, s in enumerate(skips)
        )
        self.has_skip = [s is not None for s in skips]
        # Fusion: level top-1-i for i = 0..top-1 (the last one is level 0).
        self.lateral = nn.ModuleList(
            nn.Conv2d(width[i], width[i + 1], 1, bias=False) for i in range(top)
        )
        self.refine = nn.ModuleList(conv_bn_relu(width[i + 1], width[i + 1]) for i in range(top))
        # Image guidance: stride 2 then stride 1 (levels 1 and 0).
        g1, g0 = width[top - 1], width[top]
        self.stem1 = conv_bn_relu(in_channels, g1, stride=2)
        self.stem0 = conv_bn_relu(in_channels, g0)
        self.seg_head = nn.Conv2d(g0, 2, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        init_decoder_weights(self, self.seg_head)

    def forward(
        self,
        head: torch.Tensor,
        skips: Sequence[torch.Tensor | None],
        size: tuple[int, int],
        images: torch.Tensor | None = None,
        classes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode.

        Args:
            head: ``(N, C, h, w)`` head map at its own stride (:meth:`Pyramid.maps`).
            skips: skip maps deepest first (entries may be ``None``).
            size: ``(H, W)`` of the input image.
            images: the ``(N, C, H, W)`` images the classifier saw (the guidance stem's input).
            classes: ``(N,)`` explained class per image, for a decoder built with a
                :class:`~fcam.upscalers.class_head.ClassConditionalHead`.

        Returns:
            ``(N, 2, H, W)`` logits.

        Raises:
            ValueError: without ``images``.
        """
        if images is None:
            raise ValueError("DPTDecoder needs the input images: call it with images=")
        height, width = int(size[0]), int(size[1])
        dtype = next(self.parameters()).dtype
        x = self.head(head.to(dtype))
        skips = list(skips) + [None] * (len(self.skips) - len(skips))
        guides = {1: self.stem1(images.to(dtype)), 0: self.stem0(images.to(dtype))}
        for i in range(self.levels):
            level = self.levels - 1 - i
            div = 2**level
            out = (-(-height // div), -(-width // div))
            if level in guides:
                out = tuple(guides[level].shape[-2:])  # type: ignore[assignment]
            x = F.interpolate(self.lateral[i](x), size=out, mode="bilinear", align_corners=False)
            if i < len(self.skips) and self.has_skip[i] and skips[i] is not None:
                s = self.skips[i](skips[i].to(dtype))  # type: ignore[union-attr]
                if s.shape[-2:] != x.shape[-2:]:
                    s = F.interpolate(s, size=out, mode="bilinear", align_corners=False)
                x = x + s
            if level in guides:
                x = x + guides[level]
            x = self.refine[i](x)
        logits = apply_head(self.seg_head, x, classes)
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return logits
