"""Map functions for :func:`~fcam.evaluation.evaluate_localization`.

* :func:`cam_map_fn`: the **interpolated CAM** baseline: the extractor's raw layer-resolution
  map for the ground-truth class, brought to the input size with
  :func:`fcam.cams.cam_to_size` (bilinear upsampling, then per-image min-max normalisation),
  the one recipe fcam uses everywhere for "the CAM at input size";
* :func:`fcam_map_fn`: the foreground probability of a fitted :class:`fcam.FCAM` (or any
  object with an ``explain(images, targets)`` method returning maps at input size), used as is.
"""

from __future__ import annotations

from typing import Any

import torch

from fcam.cams import cam_to_size
from fcam.evaluation.localization import MapFn

__all__ = ["cam_map_fn", "fcam_map_fn"]


def cam_map_fn(extractor: Any) -> MapFn:
    """The interpolated-CAM map function of a CAM extractor.

    Example:
        >>> with cams.create("gradcampp", model, "layer4") as ext:          # doctest: +SKIP
        ...     scores = evaluate_localization(cam_map_fn(ext), model, loader)

    Args:
        extractor: a :mod:`fcam.cams` extractor, or any callable
            ``(images, targets) -> (B, h, w)`` raw maps.

    Returns:
        ``map_fn(images, labels)``: ``cam_to_size(extractor(images, labels), (H, W))``.

    Raises:
        TypeError: ``extractor`` is not callable.
    """
    if not callable(extractor):
        raise TypeError(f"extractor must be callable, got {type(extractor).__name__}")

    def map_fn(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raw = extractor(images, labels)
        return cam_to_size(raw, tuple(images.shape[-2:]))

    return map_fn


def fcam_map_fn(explainer: Any) -> MapFn:
    """The map function of a fitted F-CAM (its maps are used without re-normalisation).

    Example:
        >>> fc = FCAM.load("fcam.pt", model)                                 # doctest: +SKIP
        >>> scores = evaluate_localization(fcam_map_fn(fc), model, loader)   # doctest: +SKIP

    Args:
        explainer: an object with ``explain(images, targets)`` such as :class:`fcam.FCAM`.

    Returns:
        ``map_fn(images, labels)`` calling ``explainer.explain`` under ``torch.no_grad()``.

    Raises:
        TypeError: ``explainer`` has no ``explain`` method.
    """
    explain = getattr(explainer, "explain", None)
    if not callable(explain):
        raise TypeError(f"explainer must have an explain() method, got {type(explainer).__name__}")

    def map_fn(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return explain(images, labels)

    return map_fn
