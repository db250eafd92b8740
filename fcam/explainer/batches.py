"""What a training loader may yield, parsed into one :class:`Batch`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fcam.core.targets import parse_targets
from fcam.core.validation import check_images

__all__ = ["Batch", "as_rgb", "parse_batch", "raw_rgb"]


@dataclass(frozen=True)
class Batch:
    """One parsed training batch.

    Attributes:
        images: ``(B, C, H, W)`` normalised images.
        labels: ``(B,)`` class indices, or ``None`` (the prediction picks the CAM class).
        raw: ``(B, 3, H, W)`` RGB (or ``(B, 1, H, W)`` grey) in [0, 255] for the CRF and the
            seeds' colours, or ``None`` (the un-normalised images).
    """

    images: Tensor
    labels: Tensor | None
    raw: Tensor | None


def parse_batch(batch: Any, channels: int, num_classes: int | None) -> Batch:
    """Accept an image tensor, an ``(images, labels, ...)`` tuple, or a dict with ``"image"``
    (``"images"``), optional ``"label"`` (``"labels"``) and ``"raw"`` (``"raw_image"``).

    Raises:
        TypeError, ValueError: naming the loader and what is wrong with the batch.
    """
    raw = None
    if isinstance(batch, Tensor):
        images, labels = batch, None
    elif isinstance(batch, Mapping):
        key = next((k for k in ("image", "images") if k in batch), None)
        if key is None:
            raise TypeError(
                f"loader: dict batches need an 'image' key, got keys {sorted(map(str, batch))}"
            )
        images = batch[key]
        labels = next((batch[k] for k in ("label", "labels") if k in batch), None)
        raw = next((batch[k] for k in ("raw_image", "raw") if k in batch), None)
    elif isinstance(batch, Sequence) and not isinstance(batch, str) and batch:
        images = batch[0]
        labels = batch[1] if len(batch) > 1 else None
    else:
        raise TypeError(
            "loader must yield image tensors, (images, labels, ...) tuples or dicts with an "
            f"'image' key; got {type(batch).__name__}"
        )
    images = check_images(images, channels, "loader images")
    if raw is not None and (
        not isinstance(raw, Tensor) or raw.ndim != 4 or raw.shape[1] not in (1, 3)
        or raw.shape[0] != images.shape[0] or raw.shape[2:] != images.shape[2:]
    ):
        raise ValueError(
            "loader: the raw image must be a (B, 3, H, W) RGB or (B, 1, H, W) grey tensor with "
            f"the images' B, H, W; got {getattr(raw, 'shape', type(raw).__name__)} vs "
            f"{tuple(images.shape)}"
        )
    if raw is None and channels not in (1, 3):
        # The CRF and the colour-weighted seeds read colours; un-normalising a 4-channel input
        # would hand them a fourth band they cannot interpret.
        raise ValueError(
            f"loader: the model takes {channels}-channel images, so F-CAM's CRF needs each batch "
            "to carry an RGB (or grey) view of the images: yield dicts with a 'raw' "
            "(B, 3, H, W) tensor in [0, 255]"
        )
    if labels is not None:
        try:
            labels = parse_targets(labels, images.shape[0], num_classes, "loader labels")
        except ValueError as exc:
            raise ValueError(f"loader: {exc}") from None
    return Batch(images, labels, raw)


def raw_rgb(
    images: Tensor, raw: Tensor | None, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor
) -> Tensor:
    """Values in [0, 255] for the CRF and the seeds: the batch's raw image, or the
    un-normalised input; ``(B, 3, H, W)`` RGB or ``(B, 1, H, W)`` grey (see :func:`as_rgb`).

    Example:
        >>> raw_rgb(torch.zeros(1, 3, 1, 1), None, (0.5,) * 3, (0.5,) * 3).flatten().tolist()
        [127.5, 127.5, 127.5]
    """
    if raw is not None:
        return raw.to(images.device, torch.float32)
    # as_tensor: a caller holding the statistics on the device (the trainer) copies nothing.
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return ((images.float() * std_t + mean_t) * 255.0).clamp_(0.0, 255.0)


def as_rgb(values: Tensor) -> Tensor:
    r"""A grey ``(B, 1, H, W)`` image as the RGB image it is (R = G = B); RGB passes through.

    The CRF's colour distance between two grey pixels is then :math:`\sqrt{3}\,|v - w|`, what
    the same picture saved as RGB gives, so ``sigma_rgb`` means the same for both.

    Example:
        >>> as_rgb(torch.full((1, 1, 1, 1), 7.0)).flatten().tolist()
        [7.0, 7.0, 7.0]
    """
    return values.expand(-1, 3, -1, -1) if values.shape[1] == 1 else values
