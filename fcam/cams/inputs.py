"""Validation of image batches, shared by the extractors and :class:`fcam.FCAM`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["check_images"]


def check_images(images: Any, channels: int | None = None, name: str = "images") -> Tensor:
    """Raise a clear error unless ``images`` is a finite, non-empty ``(B, C, H, W)`` float tensor.

    Example:
        >>> check_images(torch.zeros(2, 3, 8, 8), channels=3).shape
        torch.Size([2, 3, 8, 8])

    Args:
        images: the candidate batch.
        channels: the channel count the model expects (``None``: not checked).
        name: the argument name used in error messages.

    Returns:
        ``images`` unchanged.

    Raises:
        TypeError: if ``images`` is not a floating-point tensor.
        ValueError: on a wrong rank, an empty batch, a channel mismatch or NaN/inf values.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"`{name}` must be 4-D (B, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"`{name}` has {images.shape[1]} channels but the model expects {channels}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"`{name}` contains NaN or infinite values")
    return images
