"""Argument checks that raise a clear ``TypeError``/``ValueError`` naming the argument.

One implementation each for numbers, integers, image batches and normalisation statistics;
every public entry point of fcam validates through these, so the same mistake gets the same
message everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_bool", "check_images", "check_int", "check_maps", "check_number", "check_stats"]


def check_number(
    value: object,
    name: str,
    *,
    positive: bool = False,
    non_negative: bool = False,
    maximum: float | None = None,
) -> float:
    """Return ``value`` as a float after checking that it is a finite real number.

    Example:
        >>> check_number(3, "lr", positive=True)
        3.0
        >>> check_number(float("nan"), "lr")
        Traceback (most recent call last):
        ...
        ValueError: lr must be a finite number, got nan

    Args:
        value: the candidate (``bool`` is refused even though it is an ``int``).
        name: the argument name used in the message.
        positive: require ``value > 0``.
        non_negative: require ``value >= 0``.
        maximum: require ``value <= maximum``.

    Raises:
        ValueError: if the value is not a finite number or is out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be a positive finite number (> 0), got {value!r}")
    if non_negative and value < 0:
        raise ValueError(f"{name} must be a non-negative finite number (>= 0), got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return float(value)


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` after checking that it is a ``bool`` (not 0/1 or a string).

    Example:
        >>> check_bool(True, "class_head")
        True
        >>> check_bool("yes", "class_head")
        Traceback (most recent call last):
        ...
        TypeError: class_head must be a bool, got str

    Raises:
        TypeError: if the value is not a bool.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """Return ``value`` after checking that it is an ``int`` (not a bool) ``>= minimum``.

    Example:
        >>> check_int(4, "epochs")
        4
        >>> check_int(0, "epochs")
        Traceback (most recent call last):
        ...
        ValueError: epochs must be a positive int, got 0

    Raises:
        ValueError: if the value is not an integer or is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


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


def check_stats(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate per-channel normalisation statistics; return them as float tuples.

    Example:
        >>> check_stats([0.5], [0.25], channels=1)
        ((0.5,), (0.25,))

    Raises:
        ValueError: wrong length, non-finite values or a non-positive ``std``.
    """
    try:
        mean_t = tuple(check_number(v, "mean") for v in mean)
        std_t = tuple(check_number(v, "std", positive=True) for v in std)
    except TypeError:
        raise ValueError(f"mean and std must be sequences of numbers, got {mean!r} and {std!r}") from None
    if len(mean_t) != channels or len(std_t) != channels:
        raise ValueError(
            f"mean and std need {channels} values (one per channel), got {len(mean_t)} and {len(std_t)}"
        )
    return mean_t, std_t


def check_maps(maps: Any, batch: int, name: str = "maps") -> Tensor:
    """Accept a ``(B, h, w)`` or ``(B, 1, h, w)`` tensor of maps for ``batch`` images.

    Example:
        >>> check_maps(torch.zeros(2, 1, 4, 4), batch=2).shape
        torch.Size([2, 4, 4])

    Returns:
        The maps as ``(B, h, w)``.

    Raises:
        TypeError: if ``maps`` is not a tensor.
        ValueError: on another shape or batch size.
    """
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a tensor (torch.Tensor), got {type(maps).__name__}")
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3 or maps.shape[0] != batch:
        raise ValueError(f"{name} must have shape (B={batch}, h, w), got {tuple(maps.shape)}")
    return maps
