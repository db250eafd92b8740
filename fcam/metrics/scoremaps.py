"""Input handling shared by the WSOL evaluators: score-map validation and threshold grids.

Score maps follow wsolevaluation's contract (``util.check_scoremap_validity``): finite values in
``[0, 1]``, one map per image, in the frame of the ground truth (224 x 224 for the standard
protocol). Both ``float32`` and ``float64`` are accepted, as numpy arrays or torch tensors on any
device.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

__all__ = ["ArrayLike", "as_maps", "as_masks", "cam_thresholds"]


def cam_thresholds(cam_curve_interval: float) -> np.ndarray:
    """The CAM threshold grid ``tau`` of the protocol: ``np.arange(0, 1, cam_curve_interval)``.

    Args:
        cam_curve_interval: spacing of the grid, in ``(0, 1)``; 0.001 gives 1,000 thresholds.

    Returns:
        float64 array ``[0, d, 2d, ..., 1 - d]`` (built exactly as wsolevaluation builds it, so
        that threshold-dependent rounding matches).

    Example:
        >>> cam_thresholds(0.25).tolist()
        [0.0, 0.25, 0.5, 0.75]
    """
    return _cam_thresholds(float(cam_curve_interval)).copy()


@lru_cache(maxsize=8)
def _cam_thresholds(cam_curve_interval: float) -> np.ndarray:
    if not (0.0 < cam_curve_interval < 1.0) or not np.isfinite(cam_curve_interval):
        raise ValueError(f"cam_curve_interval must be in (0, 1), got {cam_curve_interval!r}")
    return np.arange(0, 1, cam_curve_interval)


def _to_tensor(value: ArrayLike | Sequence, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        try:
            return torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a tensor or an array, got a ragged sequence") from exc
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def _to_batch(tensor: torch.Tensor, name: str) -> torch.Tensor:
    # (H, W) is one image; (N, 1, H, W) is a channel-first batch of single-channel maps.
    if tensor.ndim == 2:
        return tensor.unsqueeze(0)
    if tensor.ndim == 4 and tensor.shape[1] == 1:
        return tensor[:, 0]
    if tensor.ndim != 3:
        raise ValueError(
            f"{name} must have shape (N, H, W), (N, 1, H, W) or (H, W), got {tuple(tensor.shape)}"
        )
    return tensor


def as_maps(maps: ArrayLike, name: str = "maps") -> torch.Tensor:
    """Validate score maps and return them as a floating ``(N, H, W)`` tensor on their device.

    Half-precision maps are promoted to float32; float32 and float64 keep their dtype because
    the protocol's uint8 quantisation ``int(255 * s)`` is computed in the map's own precision.

    Raises:
        TypeError: not a tensor/array, or not floating point.
        ValueError: wrong shape, NaN/inf, or values outside ``[0, 1]``.
    """
    tensor = _to_batch(_to_tensor(maps, name), name)
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be floating point in [0, 1], got dtype {tensor.dtype}")
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)})")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must not contain NaN or inf values")
    low, high = float(tensor.min()), float(tensor.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must be in [0, 1], got min={low} max={high}")
    return tensor


def as_masks(masks: ArrayLike, shape: torch.Size, name: str = "masks") -> torch.Tensor:
    """Validate boolean (or 0/1) masks of the given ``(N, H, W)`` shape; returns a bool tensor."""
    tensor = _to_batch(_to_tensor(masks, name), name)
    if tensor.dtype != torch.bool:
        if tensor.is_complex() or not ((tensor == 0) | (tensor == 1)).all():
            raise ValueError(f"{name} must be boolean or contain only 0 and 1")
        tensor = tensor != 0
    if tensor.shape != shape:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, maps have {tuple(shape)}")
    return tensor
