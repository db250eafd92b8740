"""Score any map producer on a localisation loader with :mod:`fcam.metrics`.

One pass over the loader feeds three evaluators: :class:`~fcam.metrics.MaskEvaluator` (PxAP,
when the batches carry masks), :class:`~fcam.metrics.BoxEvaluator` version 2 (MaxBoxAccV2,
IoU 30/50/70) and version 1 (MaxBoxAcc at IoU 50, plus top-1 localisation from the
classifier's logits). Maps are produced for the **ground-truth class** (GT-known protocol).

Batches are dicts with ``image`` (B, 3, H, W) and ``label`` (B,), plus ground truth in the
frame of the images: boxes as ``box`` (B, 4) (:class:`~fcam.data.SyntheticWSOL`) or ``boxes``
(a list of (M_i, 4), :func:`~fcam.data.wsol_collate`), and/or ``mask`` (B, H, W) with an
optional ``ignore`` (B, H, W). Box metrics need boxes, PxAP needs masks; a metric without its
ground truth is reported as ``None``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from fcam.metrics import BoxEvaluator, MaskEvaluator

__all__ = ["LocalizationScores", "MapFn", "evaluate_localization"]

logger = logging.getLogger(__name__)

MapFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``map_fn(images, labels) -> maps``: (B, H, W) maps in [0, 1] at the images' resolution."""


@dataclass
class LocalizationScores:
    """Localisation results in percent.

    Attributes:
        pxap: pixel average precision (``None`` without masks).
        maxboxacc_v2: MaxBoxAccV2, mean over IoU 30/50/70, all contours (``None`` without
            boxes); likewise for the two below.
        maxboxacc: MaxBoxAcc (v1): largest contour, IoU 50; equals GT-known loc at IoU 50.
        top1_loc: correct top-1 class and IoU >= 50 (largest contour), max over thresholds.
        classification_acc: top-1 accuracy of the classifier on the same images.
        num_images: images evaluated.
        settings: protocol options behind the numbers.
    """

    pxap: float | None
    maxboxacc_v2: float | None
    maxboxacc: float | None
    top1_loc: float | None
    classification_acc: float
    num_images: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _boxes(batch: Mapping[str, Any]) -> Any:
    if "boxes" in batch:
        return batch["boxes"]
    if "box" in batch:
        box = torch.as_tensor(batch["box"])
        return box[:, None, :] if box.ndim == 2 else box
    return None


def _presence(seen: dict[str, bool], key: str, present: bool) -> bool:
    if seen.setdefault(key, present) != present:
        raise ValueError(f"either every batch or no batch must carry {key}")
    return present


@torch.no_grad()
def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(images)
    finally:
        model.train(was_training)


def evaluate_localization(
    map_fn: MapFn,
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    *,
    device: torch.device | str | None = None,
    cam_curve_interval: float = 0.001,
    progress: bool = True,
    desc: str = "evaluate",
) -> LocalizationScores:
    """Evaluate ``map_fn`` on every batch of ``loader``.

    Args:
        map_fn: produces (B, H, W) maps in [0, 1] for ``(images, labels)``.
        model: the classifier whose logits give top-1 localisation and accuracy.
        loader: batches as described in the module docstring.
        device: where images go; defaults to the model's device.
        cam_curve_interval: threshold step of the metrics (0.001 as in wsolevaluation).
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        The scores, with the settings used.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    masks_eval = MaskEvaluator(cam_curve_interval=cam_curve_interval)
    box_v2 = BoxEvaluator(version=2, cam_curve_interval=cam_curve_interval)
    box_v1 = BoxEvaluator(version=1, iou_thresholds=(50,), cam_curve_interval=cam_curve_interval)
    seen: dict[str, bool] = {}
    correct = count = 0
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch"):
        images = batch["image"].to(device)
        labels = torch.as_tensor(batch["label"]).to(device)
        maps = map_fn(images, labels)
        if maps.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"map_fn returned maps of size {tuple(maps.shape[-2:])}, images are "
                f"{tuple(images.shape[-2:])}"
            )
        logits = _logits(model, images)
        boxes = _boxes(batch)
        if _presence(seen, "boxes", boxes is not None):
            box_v2.update(maps, boxes)
            box_v1.update(maps, boxes, labels=labels, logits=logits)
        if _presence(seen, "masks", "mask" in batch):
            masks_eval.update(maps, batch["mask"], batch.get("ignore"))
        correct += int((logits.argmax(1) == labels).sum())
        count += labels.shape[0]
    if count == 0:
        raise ValueError("loader yielded no batch")
    if not (seen["boxes"] or seen["masks"]):
        raise ValueError("batches carry neither boxes ('box'/'boxes') nor masks ('mask')")
    v1 = box_v1.compute() if seen["boxes"] else None
    return LocalizationScores(
        pxap=masks_eval.compute().value if seen["masks"] else None,
        maxboxacc_v2=box_v2.compute().value if seen["boxes"] else None,
        maxboxacc=v1.value if v1 is not None else None,
        top1_loc=v1.top1_loc[50] if v1 is not None and v1.top1_loc is not None else None,
        classification_acc=100.0 * correct / count,
        num_images=count,
        settings={
            "cam_curve_interval": cam_curve_interval,
            "iou_thresholds_v2": [30, 50, 70],
            "targets": "ground-truth class (GT-known)",
            "frame": f"{images.shape[-2]}x{images.shape[-1]} (image size)",
        },
    )
