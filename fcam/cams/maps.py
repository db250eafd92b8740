"""Post-processing shared by every extractor: per-image normalisation and resizing.

Both functions are pure torch, batched, differentiable and keep maps on their device.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch  # noqa: F401  (doctest namespace)
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cam_to_size", "normalize", "upsample"]

_MODES = ("nearest", "bilinear", "bicubic", "area", "nearest-exact")


def normalize(maps: Tensor, eps: float = 1e-8) -> Tensor:
    r"""Min-max normalise each map of a batch to :math:`[0, 1]`.

    .. math::
        \hat M_b = \frac{M_b - \min M_b}{\max(\max M_b - \min M_b,\ \epsilon)}

    The minimum and maximum are taken over the last two (spatial) dimensions, so the
    input may be ``(B, H, W)`` or ``(B, 1, H, W)``. A constant map becomes all zeros
    (never NaN), because its numerator is exactly zero.

    Example:
        >>> normalize(torch.tensor([[[1.0, 3.0], [2.0, 5.0]]])).round(decimals=4)
        tensor([[[0.0000, 0.5000],
                 [0.2500, 1.0000]]])

    Args:
        maps: tensor with at least two dimensions; the last two are spatial.
        eps: lower bound on the range, guarding the division.

    Returns:
        Tensor of the same shape, dtype and device.

    Raises:
        TypeError: if ``maps`` is not a floating-point tensor.
        ValueError: if ``maps`` has fewer than two dimensions.
    """
    if not isinstance(maps, Tensor) or not maps.is_floating_point():
        raise TypeError(f"`maps` must be a floating-point tensor, got {_describe(maps)}")
    if maps.ndim < 2:
        raise ValueError(f"`maps` must have at least 2 dimensions, got shape {tuple(maps.shape)}")
    low = maps.amin(dim=(-2, -1), keepdim=True)
    shifted = maps - low
    span = shifted.amax(dim=(-2, -1), keepdim=True)
    return shifted / span.clamp_min(eps)


def upsample(maps: Tensor, size: int | Sequence[int], mode: str = "bilinear") -> Tensor:
    """Resize a batch of maps with :func:`torch.nn.functional.interpolate`.

    Bilinear and bicubic modes use ``align_corners=False`` (half-pixel centres, the
    convention of OpenCV's ``INTER_LINEAR`` used by pytorch-grad-cam).

    Example:
        >>> upsample(torch.ones(2, 7, 7), (224, 224)).shape
        torch.Size([2, 224, 224])

    Args:
        maps: ``(B, h, w)`` or ``(B, 1, h, w)`` maps.
        size: output ``(H, W)`` or a single int for a square output.
        mode: one of ``"nearest"``, ``"bilinear"``, ``"bicubic"``, ``"area"``, ``"nearest-exact"``.

    Returns:
        Maps of shape ``(B, H, W)`` (or ``(B, 1, H, W)``, following the input).

    Raises:
        TypeError: if ``maps`` is not a floating-point tensor.
        ValueError: on a bad shape, size or mode.
    """
    if not isinstance(maps, Tensor) or not maps.is_floating_point():
        raise TypeError(f"`maps` must be a floating-point tensor, got {_describe(maps)}")
    if maps.ndim not in (3, 4) or (maps.ndim == 4 and maps.shape[1] != 1):
        raise ValueError(f"`maps` must be (B, h, w) or (B, 1, h, w), got shape {tuple(maps.shape)}")
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {list(_MODES)}, got {mode!r}")
    try:
        pair = (size, size) if not isinstance(size, Sequence) else tuple(size)
        out_size = tuple(operator.index(v) for v in pair if not isinstance(v, bool))
    except TypeError:
        out_size = ()
    if len(out_size) != 2 or min(out_size) < 1:
        raise ValueError(f"`size` must be a positive int or an (H, W) pair of ints, got {size!r}")
    batch = maps if maps.ndim == 4 else maps.unsqueeze(1)
    align = False if mode in ("bilinear", "bicubic") else None
    out = F.interpolate(batch, size=out_size, mode=mode, align_corners=align)
    return out if maps.ndim == 4 else out.squeeze(1)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of dtype {value.dtype}"
    return type(value).__name__



def cam_to_size(maps: Tensor, size: int | Sequence[int]) -> Tensor:
    r"""The CAM at input size: **the** recipe used by every extractor's ``explain``, by F-CAM's
    seeds and by the "interpolated CAM" evaluation baseline.

    Bilinear upsampling (``align_corners=False``) of the raw layer-resolution map, then
    per-image min-max normalisation (:func:`normalize`):

    .. math::
        \hat M = \mathrm{normalize}\big(\mathrm{bilinear}(M, H \times W)\big)

    Normalising *after* upsampling guarantees that every map spans exactly :math:`[0, 1]` at
    the resolution where it is thresholded (seed sampling, PxAP, box thresholds); normalising
    first would leave the maximum below 1 whenever no output pixel centre falls on the peak
    cell. Bilinear (not bicubic) never overshoots, so no clamping is needed.

    Example:
        >>> cam_to_size(torch.tensor([[[0.0, 2.0]]]), (1, 4)).round(decimals=4)
        tensor([[[0.0000, 0.2500, 0.7500, 1.0000]]])

    Args:
        maps: ``(B, h, w)`` raw maps (any non-negative scale).
        size: output ``(H, W)`` or a single int.

    Returns:
        ``(B, H, W)`` maps in ``[0, 1]``; an all-constant map becomes all zeros.
    """
    return normalize(upsample(maps, size, "bilinear"))
