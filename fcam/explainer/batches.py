"""What a training loader may yield, parsed into one :class:`Batch`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fcam.core.targets import parse_targets
from fcam.core.validation import check_images

__all__ = ["Batch", "parse_batch", "raw_rgb"]


@dataclass(frozen=True)
class Batch:
    """One parsed training batch.

    Attributes:
        images: ``(B, C, H, W)`` normalised images.
        labels: ``(B,)`` class indices, or ``None`` (the prediction picks the CAM class).
        raw: ``(B, 3, H, W)`` RGB in [0, 255] for the CRF, or ``None`` (un-normalised images).
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
    if raw is not None and (not isinstance(raw, Tensor) or raw.shape != images.shape):
        raise ValueError(
            "loader: the raw image must be a tensor shaped like the images, got "
            f"{getattr(raw, 'shape', type(raw).__name__)} vs {tuple(images.shape)}"
        )
    if labels is not None:
        try:
            labels = parse_targets(labels, images.shape[0], num_classes, "loader labels")
        except ValueError as exc:
            raise ValueError(f"loader: {exc}") from None
    return Batch(images, labels, raw)


def raw_rgb(
    images: Tensor, raw: Tensor | None, mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """RGB in [0, 255] for the CRF: the batch's raw image, or the un-normalised input.

    Example:
        >>> raw_rgb(torch.zeros(1, 3, 1, 1), None, (0.5,) * 3, (0.5,) * 3).flatten().tolist()
        [127.5, 127.5, 127.5]
    """
    if raw is not None:
        return raw.to(images.device, torch.float32)
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return ((images.float() * std_t + mean_t) * 255.0).clamp_(0.0, 255.0)
