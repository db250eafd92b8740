"""CAM extractors behind one interface.

Example:
    >>> import torch, torchvision
    >>> from fcam import cams
    >>> model = torchvision.models.resnet18(weights=None, num_classes=3)
    >>> images = torch.rand(2, 3, 64, 64)
    >>> with cams.create("gradcampp", model, "layer4") as extractor:
    ...     raw = extractor(images)                 # (B, h, w) at layer resolution
    ...     maps = extractor.explain(images)        # (B, H, W) in [0, 1]
    >>> tuple(raw.shape), tuple(maps.shape)
    ((2, 2, 2), (2, 64, 64))

Every extractor is called as ``extractor(images, targets=None)`` and returns the raw,
non-negative float32 map at the target layer's resolution; ``explain`` brings it to the
input size with :func:`cam_to_size` (bilinear, then min-max), the one recipe fcam uses
everywhere; ``with_features`` also returns named module outputs from the same forward.
See :mod:`fcam.cams.gradient` and :mod:`fcam.cams.activation` for formulas.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fcam.cams.activation import CAM, ISCAM, SSCAM, ScoreCAM
from fcam.cams.base import _CAM
from fcam.cams.gradient import GradCAM, GradCAMpp, LayerCAM, SmoothGradCAMpp, XGradCAM
from fcam.cams.maps import cam_to_size, normalize, upsample
from fcam.cams.transforms import vit_reshape_transform
from fcam.cams.tscam import TSCAM
from fcam.core.layers import locate_target_layer, model_logits, resolve_layer
from fcam.core.validation import check_images

__all__ = [
    "CAM",
    "ISCAM",
    "SSCAM",
    "TSCAM",
    "GradCAM",
    "GradCAMpp",
    "LayerCAM",
    "ScoreCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
    "available",
    "cam_to_size",
    "check_images",
    "create",
    "locate_target_layer",
    "model_logits",
    "normalize",
    "resolve_layer",
    "upsample",
    "vit_reshape_transform",
]

_REGISTRY: dict[str, type[_CAM]] = {
    "cam": CAM,
    "gradcam": GradCAM,
    "gradcampp": GradCAMpp,
    "smoothgradcampp": SmoothGradCAMpp,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
    "sscam": SSCAM,
    "iscam": ISCAM,
    "tscam": TSCAM,  # class-token transformers only (docs/concepts/transformers.md)
}


def available() -> list[str]:
    """Names accepted by :func:`create`, in a fixed order.

    Example:
        >>> available()[:3]
        ['cam', 'gradcam', 'gradcampp']

    Returns:
        The list of method names.
    """
    return list(_REGISTRY)


def create(
    name: str, model: nn.Module, target_layer: nn.Module | str | None = None, **kwargs: Any
) -> _CAM:
    """Build an extractor by name.

    Example:
        >>> extractor = create("scorecam", model, "layer4", batch_size=64)   # doctest: +SKIP

    Args:
        name: one of :func:`available` (case-insensitive).
        model: the classifier.
        target_layer: module, dotted name, or ``None`` (last spatial layer, logged).
        **kwargs: method-specific options (``batch_size``, ``num_samples``, ``std``,
            ``seed``, ``eps``, ``fc_layer``, ``output_fn``, ``reshape_transform``).

    Returns:
        The extractor.

    Raises:
        ValueError: if ``name`` is unknown (the message lists :func:`available`).
        TypeError: if ``name`` is not a string.
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string, got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _REGISTRY:
        raise ValueError(f"unknown CAM method `name`={name!r}; available: {available()}")
    return _REGISTRY[key](model, target_layer, **kwargs)
