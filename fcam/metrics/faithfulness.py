"""Faithfulness metrics for any saliency map: deletion / insertion AUC, average drop and
increase in confidence.

* **Deletion / insertion** (Petsiuk et al., RISE, BMVC 2018): pixels are ranked by the map
  (highest first). Deletion replaces the top ``k/steps`` fraction of pixels of the image with a
  baseline and records the target-class probability ``p_k``; insertion starts from the baseline
  and puts the top pixels back. The score is the normalised trapezoidal area

  .. math:: \\mathrm{AUC} = \\frac{1}{S}\\Big(\\sum_{k=0}^{S} p_k - \\frac{p_0 + p_S}{2}\\Big)

  (lower is better for deletion, higher for insertion).
* **Average drop / increase in confidence** (Chattopadhyay et al., Grad-CAM++, WACV 2018), with
  ``Y`` the target probability on the image and ``O`` on the image multiplied by the map (in the
  model's input space, as pytorch-grad-cam's ``CamMultImageConfidenceChange``):

  .. math:: \\mathrm{Drop} = \\frac{100}{N}\\sum_i \\frac{\\max(0, Y_i - O_i)}{Y_i},\\qquad
            \\mathrm{Incr} = \\frac{100}{N}\\sum_i \\mathbb{1}[O_i > Y_i]

All functions run the model frozen (:func:`fcam.core.state.frozen`: eval mode, parameters
without ``requires_grad``, both restored afterwards) under ``torch.no_grad()``, batch over
images, keep tensors on the images' device, and accept maps at any resolution (bilinearly
resized to the image size). ``targets`` takes every form :func:`fcam.core.targets.parse_targets`
accepts; ``targets=None`` uses the model's arg-max on the unmodified images.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from fcam.core.layers import model_logits
from fcam.core.state import frozen
from fcam.core.targets import Targets, parse_targets
from fcam.core.validation import check_images, check_int, check_maps

__all__ = ["average_drop", "deletion_auc", "increase_in_confidence", "insertion_auc"]

Baseline = str | float | torch.Tensor


def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model_logits(model(images))


def _check_inputs(images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    check_images(images)
    maps = check_maps(maps, images.shape[0])
    if not torch.isfinite(maps).all():
        raise ValueError("maps must not contain NaN or inf values")
    maps = maps.to(device=images.device, dtype=images.dtype)
    if maps.shape[-2:] != images.shape[-2:]:
        maps = F.interpolate(
            maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
    return maps


def _resolve_targets(targets: Targets, logits: torch.Tensor) -> torch.Tensor:
    if targets is None:
        return logits.argmax(dim=1)
    parsed = parse_targets(targets, logits.shape[0], num_classes=logits.shape[1])
    assert parsed is not None  # only None for targets=None
    return parsed.to(logits.device)


def _probability(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=1).gather(1, targets[:, None])[:, 0]


def _baseline(images: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != images.shape and baseline.shape != images.shape[1:]:
            raise ValueError(f"baseline tensor must have shape {tuple(images.shape)}")
        return baseline.to(images).expand_as(images)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(images, float(baseline))
    if baseline == "zeros":
        return torch.zeros_like(images)
    if baseline == "blur":
        # RISE's substrate: Gaussian blur with an 11 x 11 kernel and sigma 5; the kernel shrinks
        # on images under 6 pixels, where reflect padding cannot cover 5 pixels.
        size = min(11, 2 * min(images.shape[-2:]) - 1)
        return gaussian_blur(images, kernel_size=[size, size], sigma=[5.0, 5.0])
    raise ValueError(f"baseline must be 'zeros', 'blur', a float or a tensor, got {baseline!r}")


def _perturbation_auc(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: Targets,
    steps: int,
    baseline: Baseline,
    return_curves: bool,
    insert: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    steps = check_int(steps, "steps")
    maps = _check_inputs(images, maps)
    substrate = _baseline(images, baseline)
    # Deletion moves baseline pixels onto the image, insertion image pixels onto the baseline.
    canvas, source = (substrate, images) if insert else (images, substrate)
    batch, _, height, width = images.shape
    pixels = height * width
    with frozen(model), torch.no_grad():
        tgt = _resolve_targets(targets, _logits(model, images))
        # rank[b, p] = position of pixel p in the saliency order (0 = most salient).
        order = torch.argsort(maps.reshape(batch, -1), dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(pixels, device=images.device).expand(batch, -1))
        rank = rank.reshape(batch, 1, height, width)
        scores = []
        for k in range(steps + 1):
            moved = rank < round(k * pixels / steps)
            scores.append(_probability(_logits(model, torch.where(moved, source, canvas)), tgt))
    curves = torch.stack(scores, dim=1)
    auc = (curves.sum(dim=1) - (curves[:, 0] + curves[:, -1]) / 2) / steps
    return (auc, curves) if return_curves else auc


def deletion_auc(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: Targets = None,
    steps: int = 100,
    baseline: Baseline = "zeros",
    return_curves: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Deletion AUC per image (lower is better).

    Args:
        model: classifier returning logits.
        images: ``(B, C, H, W)`` model inputs.
        maps: ``(B, h, w)`` saliency maps (any scale; only the pixel order matters).
        targets: class per image (``None``: the arg-max prediction).
        steps: number of deletion increments; ``steps + 1`` forward passes per batch.
        baseline: what deleted pixels become: ``"zeros"`` (RISE; the dataset mean for normalised
            inputs), ``"blur"``, a constant, or a tensor shaped like ``images``.
        return_curves: also return the ``(B, steps + 1)`` probability curves.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
        >>> deletion_auc(model, torch.rand(2, 3, 2, 2), torch.rand(2, 2, 2), steps=4).shape
        torch.Size([2])
    """
    return _perturbation_auc(
        model, images, maps, targets, steps, baseline, return_curves, insert=False
    )


def insertion_auc(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: Targets = None,
    steps: int = 100,
    baseline: Baseline = "blur",
    return_curves: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Insertion AUC per image (higher is better): pixels are put back onto ``baseline``
    (RISE's blurred image by default) in saliency order. Arguments as :func:`deletion_auc`.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
        >>> images, maps = torch.rand(2, 3, 2, 2), torch.rand(2, 2, 2)
        >>> auc, curves = insertion_auc(model, images, maps, steps=4, return_curves=True)
        >>> tuple(auc.shape), tuple(curves.shape)
        ((2,), (2, 5))
    """
    return _perturbation_auc(
        model, images, maps, targets, steps, baseline, return_curves, insert=True
    )


def _confidences(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Targets
) -> tuple[torch.Tensor, torch.Tensor]:
    maps = _check_inputs(images, maps)
    with frozen(model), torch.no_grad():
        logits = _logits(model, images)
        tgt = _resolve_targets(targets, logits)
        full = _probability(logits, tgt)
        masked = _probability(_logits(model, images * maps[:, None]), tgt)
    return full, masked


def _reduce(values: torch.Tensor, reduction: str) -> Any:
    if reduction == "mean":
        return float(values.mean())
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def average_drop(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: Targets = None,
    reduction: str = "mean",
) -> float | torch.Tensor:
    """Average drop in confidence, in percent (lower is better).

    Args:
        model: classifier returning logits.
        images: ``(B, C, H, W)`` model inputs.
        maps: ``(B, h, w)`` maps in ``[0, 1]``, multiplied into the inputs.
        targets: class per image (``None``: the arg-max prediction on ``images``).
        reduction: ``"mean"`` (a float) or ``"none"`` (per-image tensor).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
        >>> average_drop(model, torch.rand(2, 3, 2, 2), torch.ones(2, 2, 2))
        0.0
    """
    full, masked = _confidences(model, images, maps, targets)
    return _reduce(100 * (full - masked).clamp(min=0) / full, reduction)


def increase_in_confidence(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: Targets = None,
    reduction: str = "mean",
) -> float | torch.Tensor:
    """Percentage of images whose target confidence rises on ``images * maps`` (higher is
    better). Arguments as :func:`average_drop`.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
        >>> increase_in_confidence(model, torch.rand(2, 3, 2, 2), torch.ones(2, 2, 2))
        0.0
    """
    full, masked = _confidences(model, images, maps, targets)
    return _reduce(100 * (masked > full).to(images.dtype), reduction)
