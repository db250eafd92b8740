"""Seed CAMs from other libraries: pytorch-grad-cam and torchcam objects as plain callables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CamFn", "wrap_cam"]

CamFn = Callable[[Tensor, Tensor | None], Tensor]


def wrap_cam(cam: Any, model: nn.Module) -> CamFn:
    """Turn a third-party CAM object into ``(images, targets) -> Tensor[B, h, w]``.

    Supported: pytorch-grad-cam ``BaseCAM`` objects (called with ``ClassifierOutputTarget``
    targets; their maps come back as numpy at input size) and torchcam extractors (hooks are
    set at construction; they are fed the model's scores). Any other callable is returned
    unchanged and must itself return a ``(B, h, w)`` tensor or array.

    Args:
        cam: the CAM object.
        model: the classifier (torchcam needs its scores).

    Returns:
        A callable ``(images, targets)`` with ``targets`` a ``(B,)`` long tensor or ``None``.

    Raises:
        TypeError: if ``cam`` is not callable.

    Example:
        >>> from pytorch_grad_cam import GradCAM                      # doctest: +SKIP
        >>> fn = wrap_cam(GradCAM(model, target_layers=[model.layer4]), model)  # doctest: +SKIP
    """
    module = type(cam).__module__
    if module.startswith("pytorch_grad_cam"):

        def grad_cam(images: Tensor, targets: Tensor | None) -> Tensor:
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            wanted = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
            with torch.enable_grad():
                # The classifier is frozen during fit: a grad-requiring input keeps the graph.
                maps = cam(input_tensor=images.detach().requires_grad_(True), targets=wanted)
            return torch.as_tensor(maps, device=images.device, dtype=torch.float32)

        return grad_cam
    if module.startswith("torchcam"):

        def torch_cam(images: Tensor, targets: Tensor | None) -> Tensor:
            with torch.enable_grad():
                scores = model(images.detach().requires_grad_(True))
                idx = scores.argmax(1) if targets is None else targets
                maps = cam(class_idx=[int(i) for i in idx], scores=scores)
            return maps[0].detach().float()

        return torch_cam
    if callable(cam):
        return cam
    from fcam.cams import available

    raise TypeError(
        f"cam must be a name from fcam.cams.available() {available()}, an extractor or a "
        f"callable (images, targets) -> Tensor[B, h, w]; got {type(cam).__name__}"
    )
