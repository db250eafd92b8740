"""MaxBoxAcc (v1) and MaxBoxAccV2, with top-1 / top-5 / GT-known localisation.

Protocol (wsolevaluation ``BoxEvaluator``; top-k from fcam-wsol's ``wsol_metrics.py``): for each
image and each CAM threshold :math:`\\tau`, boxes are drawn from the uint8-quantised map (see
:mod:`fcam.metrics.boxes`); the image's score is the best IoU over all (estimated, GT) box pairs.

.. math::
    \\mathrm{BoxAcc}(\\tau, \\delta) = \\frac{100}{N} \\sum_i
        \\mathbb{1}\\left[\\max_{b, g} \\mathrm{IoU}(b_i(\\tau), g) \\ge \\delta\\right],\\qquad
    \\mathrm{MaxBoxAcc}(\\delta) = \\max_\\tau \\mathrm{BoxAcc}(\\tau, \\delta)

The threshold is chosen over the whole split, per :math:`\\delta`. ``version=2`` uses all contours
and reports the mean over :math:`\\delta \\in \\{30, 50, 70\\}`; ``version=1`` uses the largest
contour and reports :math:`\\delta = 50`. Top-1 (top-5) localisation additionally requires the
true class to be the arg-max (in the top 5) of the classifier's logits; the max over
:math:`\\tau` is taken separately for each of GT-known, top-1 and top-5.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fcam.metrics.boxes import best_iou_per_threshold
from fcam.metrics.scoremaps import ArrayLike, _to_tensor, as_maps, cam_thresholds

__all__ = ["BoxEvaluator", "BoxResult", "maxboxacc"]

logger = logging.getLogger(__name__)


@dataclass
class BoxResult:
    """Outcome of :meth:`BoxEvaluator.compute`; all accuracies in percent.

    Attributes:
        value: the headline number: mean of ``max_box_acc`` over the IoU thresholds (v2) or
            ``max_box_acc[50]`` (v1).
        metric: ``"MaxBoxAccV2"`` or ``"MaxBoxAcc"``.
        max_box_acc: MaxBoxAcc per IoU threshold (percent keys, e.g. ``50``); this is the
            GT-known localisation accuracy at that IoU.
        best_tau: the CAM threshold reaching ``max_box_acc`` (first maximum), per IoU threshold.
        curves: BoxAcc(tau) per IoU threshold, aligned with ``thresholds``.
        thresholds: the CAM thresholds tau.
        top1_loc / top5_loc: max over tau of top-1 / top-5 localisation accuracy per IoU
            threshold, ``None`` when no logits were given.
        top1_curves / top5_curves: the matching per-threshold curves (or ``None``).
        num_images: images evaluated.
        settings: the protocol options used (version, interval, IoU thresholds).
        image_iou: per image, in update order, the best IoU over all thresholds (the same
            sweep as ``curves``); the failure gallery of :func:`fcam.evaluation.write_report`
            ranks images by it.
        image_tau: per image, the (first) threshold reaching ``image_iou``.
    """

    value: float
    metric: str
    max_box_acc: dict[int, float]
    best_tau: dict[int, float]
    curves: dict[int, np.ndarray]
    thresholds: np.ndarray
    top1_loc: dict[int, float] | None
    top5_loc: dict[int, float] | None
    top1_curves: dict[int, np.ndarray] | None
    top5_curves: dict[int, np.ndarray] | None
    num_images: int
    settings: dict[str, Any] = field(default_factory=dict)
    image_iou: np.ndarray = field(default_factory=lambda: np.zeros(0))
    image_tau: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def gt_known_loc(self) -> dict[int, float]:
        """GT-known localisation per IoU threshold (identical to ``max_box_acc``)."""
        return self.max_box_acc

    def to_dict(self, curves: bool = False) -> dict[str, Any]:
        """A JSON-friendly summary; per-threshold curves only when ``curves=True``."""
        out: dict[str, Any] = {
            self.metric: self.value,
            "max_box_acc": {str(k): v for k, v in self.max_box_acc.items()},
            "best_tau": {str(k): v for k, v in self.best_tau.items()},
            "top1_loc": None
            if self.top1_loc is None
            else {str(k): v for k, v in self.top1_loc.items()},
            "top5_loc": None
            if self.top5_loc is None
            else {str(k): v for k, v in self.top5_loc.items()},
            "num_images": self.num_images,
            "settings": dict(self.settings),
        }
        if curves:
            out["thresholds"] = self.thresholds.tolist()
            out["curves"] = {str(k): v.tolist() for k, v in self.curves.items()}
        return out


def _as_box_list(boxes: Any, count: int, frame: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Per-image GT boxes from a list of ``(M, 4)`` arrays/tensors or a padded ``(N, M, 4)``.

    Rows of a padded tensor with any negative coordinate (e.g. ``-1`` fill) are padding. A 2-D
    ``(N, 4)`` tensor with ``N`` = number of maps > 1 is one box per image; for a single map a
    2-D tensor holds that image's boxes. With ``frame = (H, W)``, a box that starts outside the
    map (nothing left after clipping) is refused, naming the image.
    """
    if isinstance(boxes, (torch.Tensor, np.ndarray)) and boxes.ndim == 3:
        padded = _to_tensor(boxes, "boxes").cpu().numpy()
        for i, b in enumerate(padded):
            if not np.isfinite(b).all():
                raise ValueError(f"boxes[{i}] has non-finite coordinates")
        per_image = [b[(b >= 0).all(axis=1)] for b in padded]
    elif isinstance(boxes, (torch.Tensor, np.ndarray)) and boxes.ndim == 2:
        array = _to_tensor(boxes, "boxes").cpu().numpy()
        per_image = [array] if count == 1 else [row[None] for row in array]
    elif isinstance(boxes, Sequence) and not isinstance(boxes, (str, bytes)):
        per_image = [
            _to_tensor(np.asarray(b) if isinstance(b, (list, tuple)) else b, "boxes").cpu().numpy()
            for b in boxes
        ]
        # An empty entry or a single (4,) box per image are reshaped to (M, 4).
        per_image = [b.reshape(-1, 4) if b.size in (0, 4) else b for b in per_image]
    else:
        raise TypeError(
            "boxes must be a sequence of (M, 4) arrays/tensors (one per image) or a padded "
            f"(N, M, 4) tensor, got {type(boxes).__name__}"
        )
    if len(per_image) != count:
        raise ValueError(f"boxes holds {len(per_image)} images, maps hold {count}")
    out = []
    for i, b in enumerate(per_image):
        b = np.asarray(b)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{i}] must have shape (M, 4), got {b.shape}")
        if b.shape[0] == 0:
            raise ValueError(f"boxes[{i}] is empty: every image needs at least one GT box")
        if b.dtype.kind not in "iub" and not np.isfinite(b).all():
            raise ValueError(f"boxes[{i}] has non-finite coordinates")
        if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any() or (b < 0).any():
            raise ValueError(f"boxes[{i}] must be x0, y0, x1, y1 with 0 <= x0 <= x1, 0 <= y0 <= y1")
        if frame is not None and ((b[:, 0] >= frame[1]) | (b[:, 1] >= frame[0])).any():
            raise ValueError(
                f"boxes[{i}] lies outside the {frame[1]}x{frame[0]} map (empty after clipping): "
                f"{b.tolist()}"
            )
        out.append(b.astype(np.float64) if b.dtype.kind == "f" else b.astype(np.int64))
    return out


class BoxEvaluator:
    """Stateful MaxBoxAcc / MaxBoxAccV2 accumulator over a split.

    Args:
        version: 2 for MaxBoxAccV2 (all contours, mean over ``iou_thresholds``), 1 for the
            CVPR MaxBoxAcc (largest contour, reported at IoU 50).
        iou_thresholds: IoU thresholds in percent.
        cam_curve_interval: spacing of the CAM threshold grid (0.001: 1,000 thresholds).

    Example:
        >>> ev = BoxEvaluator(version=2, cam_curve_interval=0.01)
        >>> maps = torch.zeros(1, 8, 8); maps[0, 2:5, 2:6] = 1.0
        >>> ev.update(maps, [torch.tensor([[2, 2, 6, 5]])])  # x1 = x + w
        >>> ev.compute().value
        100.0
    """

    def __init__(
        self,
        version: int = 2,
        iou_thresholds: Sequence[int] = (30, 50, 70),
        cam_curve_interval: float = 0.001,
    ) -> None:
        if version not in (1, 2):
            raise ValueError(f"version must be 1 (MaxBoxAcc) or 2 (MaxBoxAccV2), got {version!r}")
        self.iou_thresholds = [int(t) for t in iou_thresholds]
        if not self.iou_thresholds or any(not 0 < t <= 100 for t in self.iou_thresholds):
            raise ValueError(
                f"iou_thresholds must be percentages in (0, 100], got {iou_thresholds}"
            )
        if version == 1 and 50 not in self.iou_thresholds:
            raise ValueError("version=1 reports MaxBoxAcc at IoU 50: iou_thresholds must hold 50")
        self.version = version
        self.cam_curve_interval = float(cam_curve_interval)
        self.thresholds = cam_thresholds(self.cam_curve_interval)
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated image."""
        shape = (len(self.iou_thresholds), len(self.thresholds))
        self._correct = np.zeros(shape, dtype=np.int64)
        self._correct_top1 = np.zeros(shape, dtype=np.int64)
        self._correct_top5 = np.zeros(shape, dtype=np.int64)
        self._count = 0
        self._with_logits: bool | None = None
        self._image_iou: list[float] = []
        self._image_tau: list[float] = []

    def update(
        self,
        maps: ArrayLike,
        boxes: Sequence[ArrayLike] | ArrayLike,
        labels: ArrayLike | Sequence[int] | None = None,
        logits: ArrayLike | None = None,
    ) -> None:
        """Accumulate a batch.

        Args:
            maps: ``(N, H, W)`` score maps in ``[0, 1]`` (tensor on any device, or array), in the
                frame of ``boxes`` (224 x 224 for the standard protocol).
            boxes: GT boxes ``x0, y0, x1, y1`` in the map frame: one ``(M_i, 4)`` (or ``(4,)``)
                array/tensor per image, a padded ``(N, M, 4)`` tensor whose padding rows are
                negative, or an ``(N, 4)`` tensor holding one box per image.
            labels: ``(N,)`` true classes; with ``logits`` enables top-1/top-5 localisation.
            logits: ``(N, C)`` classifier scores (any monotone transform of them works).
        """
        maps_t = as_maps(maps)
        count = maps_t.shape[0]
        gt = _as_box_list(boxes, count, (int(maps_t.shape[-2]), int(maps_t.shape[-1])))
        hits = self._topk_hits(labels, logits, count)
        # Quantise in the map's own precision, on its device: this is `(s * 255).astype(uint8)`.
        quantised = (maps_t * 255).to(torch.uint8).cpu().numpy()
        multi = self.version == 2
        levels = np.asarray(self.iou_thresholds, dtype=np.float64)[:, None] / 100
        for i in range(count):
            best = best_iou_per_threshold(quantised[i], gt[i], self.thresholds, multi)
            correct = best[None, :] >= levels
            top = int(np.argmax(best))
            self._image_iou.append(float(best[top]))
            self._image_tau.append(float(self.thresholds[top]))
            self._correct += correct
            if hits is not None:
                self._correct_top1 += correct & hits[0][i]
                self._correct_top5 += correct & hits[1][i]
        self._count += count

    def _topk_hits(
        self, labels: Any, logits: Any, count: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        if (labels is None) != (logits is None):
            raise ValueError("labels and logits must be given together (for top-1/top-5 loc)")
        with_logits = labels is not None
        if self._with_logits is not None and self._with_logits != with_logits:
            raise ValueError("pass labels/logits to every update() call or to none of them")
        self._with_logits = with_logits
        if labels is None:
            return None
        scores = _to_tensor(logits, "logits")
        if scores.ndim != 2 or scores.shape[0] != count:
            raise ValueError(f"logits must have shape (N={count}, C), got {tuple(scores.shape)}")
        targets = _to_tensor(labels, "labels").reshape(-1).to(scores.device).long()
        if targets.shape[0] != count:
            raise ValueError(f"labels must have {count} entries, got {targets.shape[0]}")
        if ((targets < 0) | (targets >= scores.shape[1])).any():
            raise ValueError(f"labels must be class indices in [0, {scores.shape[1]})")
        top = scores.topk(min(5, scores.shape[1]), dim=1).indices
        top1 = (top[:, 0] == targets).cpu().numpy()
        top5 = (top == targets[:, None]).any(dim=1).cpu().numpy()
        return top1, top5

    def compute(self) -> BoxResult:
        """MaxBoxAcc per IoU threshold, the headline value, curves and best thresholds.

        Raises:
            RuntimeError: nothing was accumulated.
        """
        if self._count == 0:
            raise RuntimeError("BoxEvaluator.compute() called before any update()")
        curves = self._correct * 100.0 / float(self._count)
        max_acc = {t: float(curves[k].max()) for k, t in enumerate(self.iou_thresholds)}
        best_tau = {
            t: float(self.thresholds[int(np.argmax(curves[k]))])
            for k, t in enumerate(self.iou_thresholds)
        }
        if self.version == 2:
            metric, value = "MaxBoxAccV2", float(np.average(list(max_acc.values())))
        else:
            metric, value = "MaxBoxAcc", max_acc[50]
        top1 = top5 = top1_curves = top5_curves = None
        if self._with_logits:
            c1 = self._correct_top1 * 100.0 / float(self._count)
            c5 = self._correct_top5 * 100.0 / float(self._count)
            top1 = {t: float(c1[k].max()) for k, t in enumerate(self.iou_thresholds)}
            top5 = {t: float(c5[k].max()) for k, t in enumerate(self.iou_thresholds)}
            top1_curves = {t: c1[k] for k, t in enumerate(self.iou_thresholds)}
            top5_curves = {t: c5[k] for k, t in enumerate(self.iou_thresholds)}
        logger.debug("%s over %d images: %.4f", metric, self._count, value)
        return BoxResult(
            value=value,
            metric=metric,
            max_box_acc=max_acc,
            best_tau=best_tau,
            curves={t: curves[k] for k, t in enumerate(self.iou_thresholds)},
            thresholds=self.thresholds.copy(),
            top1_loc=top1,
            top5_loc=top5,
            top1_curves=top1_curves,
            top5_curves=top5_curves,
            num_images=self._count,
            settings={
                "version": self.version,
                "cam_curve_interval": self.cam_curve_interval,
                "iou_thresholds": list(self.iou_thresholds),
                "multi_contour": self.version == 2,
            },
            image_iou=np.asarray(self._image_iou, dtype=np.float64),
            image_tau=np.asarray(self._image_tau, dtype=np.float64),
        )


def maxboxacc(
    maps: ArrayLike,
    boxes: Sequence[ArrayLike] | ArrayLike,
    version: int = 2,
    cam_curve_interval: float = 0.001,
) -> float:
    """MaxBoxAccV2 (``version=2``) or MaxBoxAcc (``version=1``) of a whole split, in percent.

    Args:
        maps: ``(N, H, W)`` score maps in ``[0, 1]``.
        boxes: one ``(M, 4)`` ``x0, y0, x1, y1`` array per image, in the maps' frame.
        version: 2 (all contours, mean over IoU 30/50/70) or 1 (largest contour, IoU 50).
        cam_curve_interval: CAM threshold spacing.

    Example:
        >>> maps = np.zeros((1, 8, 8)); maps[0, 1:4, 1:4] = 1.0
        >>> maxboxacc(maps, [np.array([[1, 1, 4, 4]])], cam_curve_interval=0.1)
        100.0
    """
    evaluator = BoxEvaluator(version=version, cam_curve_interval=cam_curve_interval)
    evaluator.update(maps, boxes)
    return evaluator.compute().value
