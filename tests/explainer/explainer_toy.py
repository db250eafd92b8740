"""The small classifier the class-specific map tests fit F-CAM on (3 classes, stride 4)."""

from __future__ import annotations

import torch
from torch import nn

#: Side of the test images.
SIZE = 32


def tiny() -> nn.Module:
    """Conv 8 → Conv 16 (stride 2) → Conv 16 (stride 2, the CAM layer ``"4"``) → linear, in eval mode."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
    ).eval()  # fmt: skip


def images() -> torch.Tensor:
    """Three fixed random test images."""
    return torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
