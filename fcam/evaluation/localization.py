"""Score any map producer on a localisation loader with :mod:`fcam.metrics`.

One pass over the loader feeds three evaluators: :class:`~fcam.metrics.MaskEvaluator` (PxAP,
when the batches carry masks), :class:`~fcam.metrics.BoxEvaluator` version 2 (MaxBoxAccV2,
IoU 30/50/70) and version 1 (MaxBoxAcc at IoU 50, plus top-1 localisation from the
classifier's logits). Maps are produced for the **ground-truth class** (GT-known protocol).

Batches are dicts with ``image`` (B, C, H, W) and ``label`` (B,), plus ground truth in the
frame of the images: boxes as ``box`` (B, 4) (:class:`~fcam.data.SyntheticWSOL`) or ``boxes``
(a list of (M_i, 4), :func:`~fcam.data.wsol_collate`), and/or ``mask`` (B, H, W) with an
optional ``ignore`` (B, H, W). Box metrics need boxes, PxAP needs masks; a metric without its
ground truth is reported as ``None``.

The classifier can be any ``nn.Module``: its output is turned into logits with
:func:`fcam.core.model_logits` (tensors, tuples, dicts, ``.logits`` objects, or ``output_fn``).
Without a classifier (``model=None``) the localisation metrics are still computed, but
top-1 localisation and the classification accuracy are ``None``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, overload

import torch
from torch import nn

from fcam.core import OutputFn, check_maps, check_number, frozen, model_device, model_logits
from fcam.core.progress import progress_bar
from fcam.metrics import BoxEvaluator, BoxResult, MaskEvaluator, MaskResult

__all__ = ["LocalizationScores", "MapFn", "Sweeps", "evaluate_localization"]

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
        top1_loc: correct top-1 class and IoU >= 50 (largest contour), max over thresholds
            (``None`` without boxes or without a classifier).
        classification_acc: top-1 accuracy of the classifier on the same images (``None``
            without a classifier).
        num_images: images evaluated.
        settings: protocol options behind the numbers.
    """

    pxap: float | None
    maxboxacc_v2: float | None
    maxboxacc: float | None
    top1_loc: float | None
    classification_acc: float | None
    num_images: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The scores and settings as a JSON-serialisable dict."""
        return asdict(self)


@dataclass
class Sweeps:
    """The threshold sweeps behind :class:`LocalizationScores`, for plotting the same numbers.

    Attributes:
        scores: the headline numbers, read off the three results below.
        box_v2: MaxBoxAccV2's :class:`~fcam.metrics.BoxResult` (BoxAcc(τ) at IoU 30/50/70,
            each image's best IoU); ``None`` without boxes.
        box_v1: MaxBoxAcc's (largest contour, IoU 50, top-1 curves); ``None`` without boxes.
        masks: PxAP's :class:`~fcam.metrics.MaskResult` (the precision-recall curve);
            ``None`` without masks.
    """

    scores: LocalizationScores
    box_v2: BoxResult | None
    box_v1: BoxResult | None
    masks: MaskResult | None


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


def _logits(model: nn.Module, images: torch.Tensor, output_fn: OutputFn | None) -> torch.Tensor:
    with frozen(model), torch.no_grad():
        return model_logits(model(images), output_fn)


def _check_batch(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, Mapping) or "image" not in batch or "label" not in batch:
        keys = sorted(map(str, batch)) if isinstance(batch, Mapping) else type(batch).__name__
        raise TypeError(f"loader batches must be dicts with 'image' and 'label', got {keys}")
    return batch["image"], batch["label"]


def _check_maps(maps: Any, images: torch.Tensor) -> torch.Tensor:
    maps = check_maps(maps, images.shape[0], "map_fn output")
    if maps.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"map_fn returned maps of size {tuple(maps.shape[-2:])}, images are "
            f"{tuple(images.shape[-2:])}"
        )
    return maps


class _Evaluators:
    """The three metric evaluators, the classification count and the ground-truth kinds seen."""

    def __init__(self, cam_curve_interval: float) -> None:
        self.interval = cam_curve_interval
        self.masks = MaskEvaluator(cam_curve_interval=cam_curve_interval)
        self.box_v2 = BoxEvaluator(version=2, cam_curve_interval=cam_curve_interval)
        self.box_v1 = BoxEvaluator(
            version=1, iou_thresholds=(50,), cam_curve_interval=cam_curve_interval
        )
        self.seen: dict[str, bool] = {}
        self.correct = self.count = 0
        self.frame = ""

    def update(
        self,
        batch: Mapping[str, Any],
        maps: torch.Tensor,
        labels: torch.Tensor,
        logits: torch.Tensor | None,
    ) -> None:
        boxes = _boxes(batch)
        if _presence(self.seen, "boxes", boxes is not None):
            self.box_v2.update(maps, boxes)
            if logits is None:
                self.box_v1.update(maps, boxes)
            else:
                self.box_v1.update(maps, boxes, labels=labels, logits=logits)
        if _presence(self.seen, "masks", "mask" in batch):
            self.masks.update(maps, batch["mask"], batch.get("ignore"))
        if logits is not None:
            self.correct += int((logits.argmax(1) == labels).sum())
        self.count += labels.shape[0]
        self.frame = f"{maps.shape[-2]}x{maps.shape[-1]} (image size)"

    def sweeps(self, with_classifier: bool) -> Sweeps:
        if self.count == 0:
            raise ValueError("loader yielded no batch")
        if not (self.seen["boxes"] or self.seen["masks"]):
            raise ValueError("batches carry neither boxes ('box'/'boxes') nor masks ('mask')")
        v1 = self.box_v1.compute() if self.seen["boxes"] else None
        v2 = self.box_v2.compute() if self.seen["boxes"] else None
        masks = self.masks.compute() if self.seen["masks"] else None
        top1 = v1.top1_loc[50] if v1 is not None and v1.top1_loc is not None else None
        scores = LocalizationScores(
            pxap=masks.value if masks is not None else None,
            maxboxacc_v2=v2.value if v2 is not None else None,
            maxboxacc=v1.value if v1 is not None else None,
            top1_loc=top1,
            classification_acc=100.0 * self.correct / self.count if with_classifier else None,
            num_images=self.count,
            settings={
                "cam_curve_interval": self.interval,
                "iou_thresholds_v2": [30, 50, 70],
                "targets": "ground-truth class (GT-known)",
                "frame": self.frame,
            },
        )
        return Sweeps(scores, v2, v1, masks)


@overload
def evaluate_localization(
    map_fn: MapFn, model: nn.Module | None, loader: Iterable[Mapping[str, Any]], *,
    device: torch.device | str | None = ..., cam_curve_interval: float = ...,
    output_fn: OutputFn | None = ..., progress: bool = ..., desc: str = ...,
    return_sweeps: Literal[False] = ...,
) -> LocalizationScores: ...


@overload
def evaluate_localization(
    map_fn: MapFn, model: nn.Module | None, loader: Iterable[Mapping[str, Any]], *,
    device: torch.device | str | None = ..., cam_curve_interval: float = ...,
    output_fn: OutputFn | None = ..., progress: bool = ..., desc: str = ...,
    return_sweeps: Literal[True],
) -> Sweeps: ...


def evaluate_localization(
    map_fn: MapFn,
    model: nn.Module | None,
    loader: Iterable[Mapping[str, Any]],
    *,
    device: torch.device | str | None = None,
    cam_curve_interval: float = 0.001,
    output_fn: OutputFn | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    return_sweeps: bool = False,
) -> LocalizationScores | Sweeps:
    """Evaluate ``map_fn`` on every batch of ``loader``.

    Example:
        >>> scores = evaluate_localization(fn, model, loader)   # doctest: +SKIP
        >>> scores.maxboxacc_v2                                 # doctest: +SKIP

    Args:
        map_fn: produces (B, H, W) maps in [0, 1] for ``(images, labels)``.
        model: the classifier whose logits give top-1 localisation and accuracy; ``None``
            skips both.
        loader: batches as described in the module docstring.
        device: where images go; defaults to the model's device (CPU without a model).
        cam_curve_interval: threshold step of the metrics (0.001 as in wsolevaluation).
        output_fn: maps the model output to logits (see :func:`fcam.core.model_logits`).
        progress: show a tqdm bar.
        desc: the bar's label.
        return_sweeps: return the :class:`Sweeps` (scores plus the curves behind them).

    Returns:
        The scores, with the settings used (or their :class:`Sweeps`).

    Raises:
        TypeError: ``map_fn`` is not callable, ``model`` is not a module, bad batches.
        ValueError: an empty loader, no ground truth, maps of the wrong size.
    """
    if not callable(map_fn):
        raise TypeError(f"map_fn must be callable, got {type(map_fn).__name__}")
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or None, got {type(model).__name__}")
    check_number(cam_curve_interval, "cam_curve_interval", positive=True, maximum=1.0)
    if device is None:
        device = model_device(model) if model is not None else torch.device("cpu")
    device = torch.device(device)
    evaluators = _Evaluators(cam_curve_interval)
    for batch in progress_bar(loader, enabled=progress, desc=desc, leave=False, unit="batch"):
        images, labels = _check_batch(batch)
        images = images.to(device, non_blocking=True)  # async from pinned memory
        labels = torch.as_tensor(labels).to(device, non_blocking=True)
        maps = _check_maps(map_fn(images, labels), images)
        logits = _logits(model, images, output_fn) if model is not None else None
        evaluators.update(batch, maps, labels, logits)
    sweeps = evaluators.sweeps(with_classifier=model is not None)
    return sweeps if return_sweeps else sweeps.scores
