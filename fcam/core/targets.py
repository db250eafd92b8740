"""Class targets in every form users bring them, parsed once.

Accepted: ``None`` (the prediction), an ``int`` (every image), a sequence of ints, a 0-D or
1-D integer tensor, a NumPy integer array or scalar, and pytorch-grad-cam style target objects
(anything with an integer ``category`` attribute, such as
``pytorch_grad_cam.utils.model_targets.ClassifierOutputTarget(3)``), alone or one per image.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["Targets", "parse_targets"]

Targets = Any
"""``None``, an int, a sequence, a tensor, a NumPy array or target objects (see the module)."""


def _index(item: Any, name: str) -> int:
    if isinstance(item, bool):
        raise TypeError(f"{name} must hold integer class indices, got a bool")
    category = getattr(item, "category", None)
    if category is not None and not isinstance(item, (int, Tensor)):
        item = category
    try:
        return operator.index(item)
    except TypeError:
        raise TypeError(
            f"{name} must hold integer class indices or objects with an integer `category` "
            f"(e.g. ClassifierOutputTarget), got {type(item).__name__}"
        ) from None


def parse_targets(
    targets: Targets, batch: int, num_classes: int | None = None, name: str = "targets"
) -> Tensor | None:
    """Validate ``targets`` for a batch of ``batch`` images.

    Example:
        >>> parse_targets(3, batch=2)
        tensor([3, 3])
        >>> import numpy as np
        >>> parse_targets(np.array([1, 0]), batch=2, num_classes=2)
        tensor([1, 0])
        >>> parse_targets([7], batch=1, num_classes=5)
        Traceback (most recent call last):
        ...
        ValueError: targets [7] out of range for 5 classes

    Args:
        targets: the targets, in any accepted form (module docstring).
        batch: number of images.
        num_classes: range-check against this many classes when given.
        name: the argument name used in messages.

    Returns:
        A CPU ``(B,)`` long tensor, or ``None`` when ``targets`` is ``None``.

    Raises:
        TypeError: on non-integer values (floats, bools, strings, other objects).
        ValueError: on a wrong count or an out-of-range class.
    """
    if targets is None:
        return None
    if hasattr(targets, "__array__") and not isinstance(targets, Tensor):
        try:
            targets = torch.as_tensor(targets)
        except (TypeError, RuntimeError) as exc:
            raise TypeError(f"{name} must be integer class indices: {exc}") from None
    if isinstance(targets, Tensor):
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer class indices, got dtype {targets.dtype}")
        if targets.ndim > 1:
            raise ValueError(f"{name} must be 0-D or 1-D, got shape {tuple(targets.shape)}")
        parsed = targets.detach().to("cpu", torch.long).reshape(-1)
        if targets.ndim == 0:
            parsed = parsed.expand(batch).clone()
    elif isinstance(targets, Sequence) and not isinstance(targets, (str, bytes)):
        parsed = torch.tensor([_index(t, name) for t in targets], dtype=torch.long)
    else:
        parsed = torch.full((batch,), _index(targets, name), dtype=torch.long)
    if parsed.numel() != batch:
        raise ValueError(f"{name} has {parsed.numel()} entries for a batch of {batch} images")
    if num_classes is not None:
        bad = parsed[(parsed < 0) | (parsed >= num_classes)]
        if bad.numel():
            raise ValueError(f"{name} {bad.tolist()} out of range for {num_classes} classes")
    return parsed
