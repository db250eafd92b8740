"""PxAP: pixel-wise average precision of score maps against GT masks (OpenImages protocol).

Protocol (wsolevaluation ``MaskEvaluator``): scores at foreground and background pixels are
histogrammed over the bins ``[0, d), [d, 2d), ..., [1 - d, 1), [1, 2), [2, 3)``; ignore pixels
are dropped. Histograms are summed over the whole split, then, with ``tp(tau)`` / ``fp(tau)`` the
foreground / background pixels scoring ``>= tau`` and ``P`` all foreground pixels:

.. math::
    \\mathrm{PxAP} = 100 \\sum_k \\mathrm{prec}_k\\,(\\mathrm{rec}_k - \\mathrm{rec}_{k-1}),\\quad
    \\mathrm{prec}_k = \\frac{tp_k}{tp_k + fp_k},\\ \\mathrm{rec}_k = \\frac{tp_k}{P}

a right-Riemann sum from the top bin down, skipping points with ``tp + fp = 0``. Scores are not
quantised; binning is done in float64 exactly like ``np.histogram``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fcam.metrics.scoremaps import ArrayLike, as_maps, as_masks, cam_thresholds

__all__ = ["MaskEvaluator", "MaskResult", "pxap"]

logger = logging.getLogger(__name__)


@dataclass
class MaskResult:
    """Outcome of :meth:`MaskEvaluator.compute`.

    Attributes:
        value: PxAP in percent.
        precision / recall: the PR curve, one point per threshold in *ascending* ``thresholds``
            order (``precision`` is NaN where nothing scores above the threshold).
        thresholds: CAM thresholds tau (a pixel is predicted foreground when its score >= tau).
        best_tau: threshold maximising ``precision + recall`` (fcam-wsol's operating point for
            drawings; ties go to the lowest tau).
        num_images: images evaluated.
        settings: the protocol options used.
    """

    value: float
    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    best_tau: float
    num_images: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, curves: bool = False) -> dict[str, Any]:
        """A JSON-friendly summary; PR curve only when ``curves=True``."""
        out: dict[str, Any] = {
            "PxAP": self.value,
            "best_tau": self.best_tau,
            "num_images": self.num_images,
            "settings": dict(self.settings),
        }
        if curves:
            out["thresholds"] = self.thresholds.tolist()
            out["precision"] = [None if np.isnan(p) else float(p) for p in self.precision]
            out["recall"] = self.recall.tolist()
        return out


class MaskEvaluator:
    """Stateful PxAP accumulator (pooled foreground/background score histograms).

    Args:
        cam_curve_interval: bin width ``d`` of the score histograms.

    Example:
        >>> ev = MaskEvaluator(cam_curve_interval=0.01)
        >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool); masks[0, :2] = True
        >>> ev.update(masks.float(), masks)
        >>> ev.compute().value
        100.0
    """

    def __init__(self, cam_curve_interval: float = 0.001) -> None:
        self.cam_curve_interval = float(cam_curve_interval)
        self.thresholds = cam_thresholds(self.cam_curve_interval)
        self._edges = np.append(self.thresholds, [1.0, 2.0, 3.0])
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated image."""
        self._fg_hist = np.zeros(len(self._edges) - 1, dtype=np.float64)
        self._bg_hist = np.zeros(len(self._edges) - 1, dtype=np.float64)
        self._count = 0

    def update(self, maps: ArrayLike, masks: ArrayLike, ignore: ArrayLike | None = None) -> None:
        """Accumulate a batch.

        Args:
            maps: ``(N, H, W)`` score maps in ``[0, 1]`` (any device).
            masks: ``(N, H, W)`` boolean foreground masks in the maps' frame.
            ignore: optional ``(N, H, W)`` boolean ignore regions; only ignore pixels outside the
                foreground are dropped (the protocol's ``ignore & ~fg``).
        """
        maps_t = as_maps(maps)
        fg = as_masks(masks, maps_t.shape, "masks").to(maps_t.device)
        valid = torch.ones_like(fg)
        if ignore is not None:
            valid = ~(as_masks(ignore, maps_t.shape, "ignore").to(maps_t.device) & ~fg)
        scores = maps_t if maps_t.device.type != "mps" else maps_t.cpu()  # MPS lacks float64
        fg, valid = fg.to(scores.device), valid.to(scores.device)
        edges = torch.as_tensor(self._edges, dtype=torch.float64, device=scores.device)
        # bucketize(right=True) - 1 puts s in bin i iff edges[i] <= s < edges[i+1], which is how
        # np.histogram bins float scores against float64 edges.
        bins = torch.bucketize(scores.to(torch.float64), edges, right=True) - 1
        nbins = len(self._edges) - 1
        self._fg_hist += torch.bincount(bins[fg & valid], minlength=nbins).cpu().numpy()
        self._bg_hist += torch.bincount(bins[~fg & valid], minlength=nbins).cpu().numpy()
        self._count += maps_t.shape[0]

    def compute(self) -> MaskResult:
        """PxAP of everything accumulated.

        Raises:
            RuntimeError: nothing accumulated.
            ValueError: no foreground pixel, or no pixel at all, in the split.
        """
        if self._count == 0:
            raise RuntimeError("MaskEvaluator.compute() called before any update()")
        # Reverse cumulative sums: index 0 is the [2, 3) bin (recall 0), then downwards.
        tp = self._fg_hist[::-1].cumsum()
        fp = self._bg_hist[::-1].cumsum()
        positives = self._fg_hist.sum()
        if positives <= 0:
            raise ValueError("PxAP needs at least one foreground (positive) GT pixel in the split")
        if ((tp + fp) <= 0).all():
            raise ValueError("PxAP needs at least one non-ignored pixel in the split")
        defined = (tp + fp) != 0
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
        recall = tp / positives
        value = float((precision[1:] * np.diff(recall))[defined[1:]].sum() * 100)
        # Back to ascending-threshold order: entry k is "score >= thresholds[k]".
        prec_asc = precision[::-1][: len(self.thresholds)]
        rec_asc = recall[::-1][: len(self.thresholds)]
        objective = np.where(np.isnan(prec_asc), -np.inf, prec_asc + rec_asc)
        best_tau = float(self.thresholds[int(np.argmax(objective))])
        logger.debug("PxAP over %d images: %.4f", self._count, value)
        return MaskResult(
            value=value,
            precision=prec_asc.copy(),
            recall=rec_asc.copy(),
            thresholds=self.thresholds.copy(),
            best_tau=best_tau,
            num_images=self._count,
            settings={"cam_curve_interval": self.cam_curve_interval},
        )


def pxap(
    maps: ArrayLike,
    masks: ArrayLike,
    ignore: ArrayLike | None = None,
    cam_curve_interval: float = 0.001,
) -> float:
    """PxAP (percent) of ``(N, H, W)`` maps in ``[0, 1]`` against boolean ``(N, H, W)`` masks.

    Args:
        maps: score maps.
        masks: foreground masks.
        ignore: optional ignore regions (dropped where they do not overlap the foreground).
        cam_curve_interval: histogram bin width.

    Example:
        >>> masks = np.zeros((1, 4, 4), dtype=bool); masks[0, 0] = True
        >>> pxap(np.full((1, 4, 4), 0.5), masks)  # constant map: the positive fraction
        25.0
    """
    evaluator = MaskEvaluator(cam_curve_interval=cam_curve_interval)
    evaluator.update(maps, masks, ignore)
    return evaluator.compute().value
