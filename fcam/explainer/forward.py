"""The forward pieces :class:`~fcam.FCAM` composes: pyramid features, seed CAM, decoding and
the returned map's blend with the CAM (:func:`mix_with_cam`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from fcam.cams import cam_to_size
from fcam.core.validation import check_maps

if TYPE_CHECKING:
    from fcam.explainer.fcam import FCAM

__all__ = ["attach_inputs", "cam_and_features", "decode", "mix_with_cam"]

# Key of the input images in the feature dicts handed to decode() (no module has this name);
# decoders with ``needs_images = True`` (image guidance, fcam.upscalers.DPTDecoder) read them.
_IMAGES = "<images>"
# Key of the explained class per image, read by a class-conditional head (config.class_head).
_CLASSES = "<classes>"


def mix_with_cam(prob: Tensor, cam: Tensor, gamma: float, mix: float) -> Tensor:
    r"""The map :meth:`FCAM.explain` returns: :math:`(1-\alpha)\, p \cdot \mathrm{cam}^{\gamma}
    + \alpha\, \mathrm{cam}` (:math:`\alpha` = ``mix``), per image ``p`` alone where the CAM is
    constant (e.g. all zero when the class-weighted sum is negative everywhere): such a CAM
    ranks nothing and would erase or shift the map.

    Example:
        >>> p, cam = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.5, 0.25]]])
        >>> mix_with_cam(p, cam, gamma=0.0, mix=0.2).round(decimals=4)
        tensor([[[0.9000, 0.0500]]])
    """
    flat = cam.flatten(1)
    constant = (flat.amax(1) <= flat.amin(1)).view(-1, *([1] * (cam.ndim - 1)))
    weighted = prob * cam.pow(gamma) if gamma > 0 else prob
    mixed = torch.lerp(weighted, cam, mix) if mix > 0 else weighted
    return torch.where(constant, prob, mixed)


def attach_inputs(feats: Mapping[str, Tensor], images: Tensor, classes: Tensor | None) -> dict[str, Tensor]:
    """``feats`` plus the input images and the explained classes (see :meth:`FCAM.attach_inputs`)."""
    out = {**feats, _IMAGES: images.detach()}
    if classes is not None:
        out[_CLASSES] = classes.to(images.device)
    return out


def cam_and_features(fc: FCAM, images: Tensor, targets: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
    """Seed CAM at input size plus the pyramid features (see :meth:`FCAM.cam_and_features`)."""
    if fc.cam_fn is None:
        raise ValueError(
            "this FCAM has no seed cam (it was fitted with a custom callable that cannot be "
            "imported); pass cam= to FCAM.load, or explain with cam_mix=0, "
            "cam_exponent=0 and return_cam=False"
        )
    with_features = getattr(fc.cam_fn, "with_features_and_targets", None)
    if callable(with_features):
        raw, feats, classes = with_features(images, targets, fc.pyramid.names)
        feats = attach_inputs(feats, images, classes)
    else:
        raw = fc.cam_fn(images, targets)
        feats = fc.features(images, targets)  # a fresh dict, with the images and classes
    raw = check_maps(torch.as_tensor(raw, device=images.device), images.shape[0], "cam output")
    raw = torch.nan_to_num(raw.float(), nan=0.0, posinf=0.0, neginf=0.0)
    return cam_to_size(raw, tuple(images.shape[-2:])), feats


def decode(fc: FCAM, decoder: nn.Module, feats: Mapping[str, Tensor], size: tuple[int, int]) -> Tensor:
    """Decoder logits ``(B, 2, H, W)`` from captured features (see :meth:`FCAM.decode`)."""
    head, skips = fc.pyramid.maps(feats, size)
    extra: dict[str, Tensor | None] = {}
    if getattr(getattr(decoder, "module", decoder), "needs_images", False):
        extra["images"] = feats.get(_IMAGES)
    if fc.config.class_head:
        if feats.get(_CLASSES) is None:
            raise ValueError(
                "this F-CAM has a class head (class_head=True): decode needs features from "
                "features(images, targets) or cam_and_features(images, targets), which record "
                "the explained classes"
            )
        extra["classes"] = feats[_CLASSES]
    return decoder(head, skips, size, **extra)
