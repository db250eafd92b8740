"""WSOL localisation metrics (wsolevaluation protocol) and faithfulness metrics.

* :func:`maxboxacc`, :class:`BoxEvaluator`: MaxBoxAcc (v1) / MaxBoxAccV2, top-1/top-5 loc.
* :func:`pxap`, :class:`MaskEvaluator`: pixel-wise average precision.
* :mod:`fcam.metrics.boxes`: inclusive IoU, ``resize_bbox``, boxes from score maps.
* :func:`prepare_scoremaps`: CAM -> score map (bicubic/bilinear, normalise after/before/none).
* :func:`evaluate_scoremap_dir`, :func:`save_scoremaps`: wsolevaluation's ``.npy`` workflow.
* :mod:`fcam.metrics.faithfulness`: deletion / insertion AUC, average drop, increase in
  confidence.
"""

from __future__ import annotations

from fcam.metrics.box_accuracy import BoxEvaluator, BoxResult, maxboxacc
from fcam.metrics.boxes import box_iou, boxes_at_thresholds, resize_bbox
from fcam.metrics.faithfulness import (
    average_drop,
    deletion_auc,
    increase_in_confidence,
    insertion_auc,
)
from fcam.metrics.pxap import MaskEvaluator, MaskResult, pxap
from fcam.metrics.scoremap_files import evaluate_scoremap_dir, save_scoremaps
from fcam.metrics.scoremap_prep import normalize_scoremaps, prepare_scoremaps
from fcam.metrics.scoremaps import cam_thresholds

__all__ = [
    "BoxEvaluator",
    "BoxResult",
    "MaskEvaluator",
    "MaskResult",
    "average_drop",
    "box_iou",
    "boxes_at_thresholds",
    "cam_thresholds",
    "deletion_auc",
    "evaluate_scoremap_dir",
    "increase_in_confidence",
    "insertion_auc",
    "maxboxacc",
    "normalize_scoremaps",
    "prepare_scoremaps",
    "pxap",
    "resize_bbox",
    "save_scoremaps",
]
