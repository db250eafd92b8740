"""Freezing a classifier for a computation and restoring it exactly afterwards."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["ModelState", "frozen", "model_device", "model_dtype"]


class ModelState:
    """Snapshot of every module's train/eval flag and every parameter's ``requires_grad``.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2)).train()
        >>> state = ModelState(m); _ = m.eval().requires_grad_(False); state.restore()
        >>> m.training, m[0].weight.requires_grad
        (True, True)
    """

    def __init__(self, model: nn.Module) -> None:
        self._modes = [(module, module.training) for module in model.modules()]
        self._flags = [(param, param.requires_grad) for param in model.parameters()]

    def restore(self) -> None:
        """Put every flag back as it was when the snapshot was taken."""
        for module, mode in self._modes:
            module.training = mode
        for param, flag in self._flags:
            param.requires_grad_(flag)


@contextmanager
def frozen(model: nn.Module, *, requires_grad: bool = False) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode and its parameters frozen; restore on exit.

    Switching ``requires_grad`` off means a backward through the model never computes (or
    touches) a parameter's ``.grad``; modes and flags come back even when the block raises.

    Example:
        >>> m = nn.Linear(2, 2).train()
        >>> with frozen(m):
        ...     m.training, m.weight.requires_grad
        (False, False)
        >>> m.training, m.weight.requires_grad
        (True, True)

    Args:
        model: the classifier.
        requires_grad: leave the parameters' flags as they are when ``True``.

    Yields:
        ``model``.
    """
    state = ModelState(model)
    try:
        model.eval()
        if not requires_grad:
            model.requires_grad_(False)
        yield model
    finally:
        state.restore()


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (or buffer); CPU for a stateless model.

    Example:
        >>> model_device(nn.Linear(2, 2))
        device(type='cpu')
    """
    tensor: torch.Tensor | None = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Dtype of the model's first floating-point parameter (or buffer); float32 if none.

    Example:
        >>> model_dtype(nn.Linear(2, 2).double())
        torch.float64
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32
