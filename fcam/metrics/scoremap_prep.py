"""Turning low-resolution CAMs into evaluation score maps, with the protocol's options.

wsolevaluation (``inference.py``) resizes each CAM to the input size with OpenCV's
``INTER_CUBIC`` and then min-max normalises it (``normalize_scoremap``: subtract the min, divide
by the max; constant or NaN maps become zeros). F-CAM's code instead min-max normalises the
low-resolution CAM and upsamples it bilinearly (``align_corners=False``), and uses its own
foreground probabilities without normalisation. :func:`prepare_scoremaps` exposes the three
choices so a reported number can state which one it used.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["normalize_scoremaps", "prepare_scoremaps"]

_UPSAMPLE = ("bicubic", "bilinear")
_NORMALIZE = ("after", "before", "none")


def normalize_scoremaps(maps: torch.Tensor) -> torch.Tensor:
    r"""wsolevaluation's ``normalize_scoremap``, batched: :math:`(M - \min M) / \max(M - \min M)`.

    A constant map, or one holding a NaN, becomes all zeros. Unlike an ``eps``-guarded
    normalisation, a tiny but non-zero range is still stretched to ``[0, 1]``, as in the
    reference.

    Args:
        maps: ``(B, H, W)`` floating tensor.

    Returns:
        Normalised maps, same shape, dtype and device.

    Example:
        >>> normalize_scoremaps(torch.tensor([[[1.0, 3.0], [2.0, 5.0]]])).tolist()
        [[[0.0, 0.5], [0.25, 1.0]]]
    """
    shifted = maps - maps.amin(dim=(-2, -1), keepdim=True)
    span = shifted.amax(dim=(-2, -1), keepdim=True)
    valid = (span > 0) & ~torch.isnan(maps).any(dim=-1, keepdim=True).any(dim=-2, keepdim=True)
    return torch.where(valid, shifted / torch.where(valid, span, 1), torch.zeros_like(maps))


def _bicubic_cv2(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # torch's bicubic agrees with OpenCV's to ~1e-6 but not bit for bit, and a last-bit
    # difference can move a pixel across a uint8 level: the protocol's OpenCV call is kept.
    height, width = size
    array = maps.detach().cpu().numpy()
    out = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_CUBIC) for m in array])
    return torch.from_numpy(out).to(maps.device)


def prepare_scoremaps(
    cams: torch.Tensor,
    size: int | tuple[int, int] = 224,
    upsample: str = "bicubic",
    normalize: str = "after",
) -> torch.Tensor:
    """Resize (and normalise) raw CAMs into score maps for the WSOL evaluators.

    Args:
        cams: ``(B, h, w)`` or ``(B, 1, h, w)`` raw maps (any sign for ``normalize`` "after" or
            "before"; already in ``[0, 1]`` for "none").
        size: evaluation frame ``(H, W)`` or a side; 224 in the protocol.
        upsample: ``"bicubic"`` (OpenCV ``INTER_CUBIC``, wsolevaluation; computed on the CPU in
            float32 and moved back) or ``"bilinear"`` (torch, ``align_corners=False``, F-CAM).
        normalize: ``"after"`` upsampling (wsolevaluation), ``"before"`` it (F-CAM's CAMs), or
            ``"none"`` (probability maps such as F-CAM's output).

    Returns:
        ``(B, H, W)`` float32 maps in ``[0, 1]`` on the input's device; values a bicubic kernel
        pushes out of ``[0, 1]`` without a later normalisation are clamped.

    Example:
        >>> prepare_scoremaps(torch.rand(2, 7, 7), 224).shape
        torch.Size([2, 224, 224])
    """
    if not isinstance(cams, torch.Tensor) or not cams.is_floating_point():
        raise TypeError(f"cams must be a floating-point tensor, got {type(cams).__name__}")
    if cams.ndim == 4 and cams.shape[1] == 1:
        cams = cams[:, 0]
    if cams.ndim != 3:
        raise ValueError(f"cams must have shape (B, h, w) or (B, 1, h, w), got {tuple(cams.shape)}")
    if upsample not in _UPSAMPLE:
        raise ValueError(f"upsample must be one of {_UPSAMPLE}, got {upsample!r}")
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")
    out_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(out_size) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    maps = cams.detach().float()
    if normalize == "before":
        maps = normalize_scoremaps(maps)
    if upsample == "bicubic":
        maps = _bicubic_cv2(maps, out_size)
    else:
        maps = F.interpolate(maps[:, None], size=out_size, mode="bilinear", align_corners=False)[
            :, 0
        ]
    if normalize == "after":
        return normalize_scoremaps(maps)
    return torch.nan_to_num(maps, nan=0.0).clamp(0.0, 1.0)
