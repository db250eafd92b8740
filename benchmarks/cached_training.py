"""Trained benchmark classifiers, cached under fcam's cache dir so reruns skip the training.

Shared by the benchmark scripts (run as ``python benchmarks/<script>.py``, which puts this folder
on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcam.core.io import atomic_torch_save


def load_or_train(model: nn.Module, path: Path, train: Callable[[], dict[str, Any]],
                  retrain: bool = False) -> dict[str, Any]:
    """Load ``model``'s weights from ``path``, or run ``train()`` and cache them there.

    ``train`` trains ``model`` in place and returns what to keep beside the weights (its time,
    accuracy, final loss); the same dict comes back from a later load. The write is atomic.
    """
    if path.is_file() and not retrain:
        payload = torch.load(path, weights_only=True)
        model.load_state_dict(payload.pop("state"))
        return payload
    extras = train()
    atomic_torch_save({"state": model.state_dict(), **extras}, path)
    return extras
