"""Normalisation constants shared by the datasets, the CLI, the model specs and F-CAM."""

from __future__ import annotations

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

#: Per-channel mean of ImageNet RGB in [0, 1] (torchvision's pretrained weights expect it).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: Per-channel standard deviation of ImageNet RGB in [0, 1].
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
