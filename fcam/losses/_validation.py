"""Tensor checks shared by the F-CAM losses.

Scalar arguments go through :func:`fcam.core.validation.check_number` and
:func:`fcam.core.validation.check_int`, as everywhere in fcam; the checks here cover what is
particular to the losses (float tensors of given ranks, probability maps, RGB images in
``[0, 255]``). Each raises a :class:`ValueError` (bad values or shapes) or a
:class:`TypeError` (not a tensor, wrong dtype) that names the offending argument, so a wrong
call fails at the API boundary rather than deep inside a filter or as a NaN loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_float_tensor", "check_images", "check_probs"]

# float32 softmax outputs sum to 1 within ~1e-6; 1e-3 tolerates half-precision inputs and
# finite-difference perturbations (gradcheck) while still catching logits or masks.
_SUM_TOL = 1e-3


def check_float_tensor(x: object, name: str, ndim: int | tuple[int, ...]) -> Tensor:
    """Check that ``x`` is a floating tensor of the given rank(s) with finite values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if x.ndim not in ranks:
        raise ValueError(f"{name} must have {' or '.join(map(str, ranks))} dims, got shape "
                         f"{tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_probs(probs: object, name: str = "probs", min_classes: int = 2) -> Tensor:
    """Check a (B, K, H, W) probability map: K >= ``min_classes``, values in [0, 1], sums to 1."""
    probs = check_float_tensor(probs, name, 4)
    if probs.shape[1] < min_classes:
        raise ValueError(f"{name} must have at least {min_classes} classes (dim 1), got "
                         f"shape {tuple(probs.shape)}")
    with torch.no_grad():
        if bool((probs < -_SUM_TOL).any()) or bool((probs > 1 + _SUM_TOL).any()):
            raise ValueError(f"{name} must hold probabilities in [0, 1] (apply softmax to logits)")
        err = (probs.sum(dim=1) - 1).abs().max().item()
    if err > _SUM_TOL:
        raise ValueError(f"{name} must sum to 1 over dim 1 (max deviation {err:.3g}); "
                         "apply softmax over the class dimension")
    return probs


def check_images(images: object, name: str = "images") -> Tensor:
    """Check a (B, 3, H, W) RGB image batch with values in [0, 255]."""
    images = check_float_tensor(images, name, 4)
    if images.shape[1] != 3:
        raise ValueError(f"{name} must be RGB with shape (B, 3, H, W), got {tuple(images.shape)}")
    lo, hi = images.min().item(), images.max().item()
    if lo < 0 or hi > 255:
        raise ValueError(f"{name} must be RGB values in [0, 255] (got range [{lo:.3g}, {hi:.3g}]); "
                         "pass un-normalised images, not ImageNet-normalised tensors")
    return images
