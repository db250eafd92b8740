"""Context-managed capture of named module outputs during a forward."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["capture_features"]


@contextmanager
def capture_features(
    model: nn.Module, names: Sequence[str], *, detach: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Collect the outputs of the named modules during the forwards inside the block.

    The hooks clone the outputs, so in-place operations that run later (``ReLU(inplace=True)``)
    cannot change what was captured. A module called several times keeps its last output. The
    hooks are removed on exit, also on error.

    Args:
        model: the model to hook.
        names: qualified module names.
        detach: detach the captured tensors from the autograd graph.

    Yields:
        A dict ``name -> tensor``, filled as the forward runs.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True))
        >>> with capture_features(m, ["0"]) as feats:
        ...     _ = m(-torch.ones(1, 3, 5, 5))
        >>> tuple(feats["0"].shape)
        (1, 4, 3, 3)
    """
    modules = dict(model.named_modules())
    feats: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"module {name!r} returned {type(output).__name__}, not a tensor")
            feats[name] = output.detach().clone() if detach else output.clone()

        return hook

    try:
        for name in dict.fromkeys(names):
            if name not in modules:
                raise ValueError(f"module {name!r} not found in {type(model).__name__}")
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        yield feats
    finally:
        for handle in handles:
            handle.remove()
