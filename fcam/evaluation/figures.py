"""The report's figures (matplotlib, optional extra ``fcam[report]``) and thumbnails (Pillow).

Every curve is read off a :class:`~fcam.evaluation.Sweeps` (the metrics' own threshold
sweeps); nothing here recomputes a metric.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fcam.core.io import atomic_write_bytes
from fcam.core.overlay import GT_BOX_COLOUR, PRED_BOX_COLOUR, draw_boxes, overlay
from fcam.evaluation.localization import Sweeps

__all__ = ["MATPLOTLIB_MISSING", "plateau", "require_matplotlib", "save_curves", "save_thumbnail"]

#: The one-line error when matplotlib is missing.
MATPLOTLIB_MISSING = 'the evaluation report needs matplotlib: pip install "fcam[report]"'

# Curve colours in producer order (matplotlib's default cycle, fixed so pages are comparable).
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


def require_matplotlib() -> Any:
    """Import matplotlib's Agg-backed :class:`~matplotlib.figure.Figure`, or raise ImportError.

    Raises:
        ImportError: with :data:`MATPLOTLIB_MISSING` as its one-line message.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(MATPLOTLIB_MISSING) from None
    return Figure


def plateau(thresholds: np.ndarray, curve: np.ndarray, points: float = 5.0) -> tuple[float, float]:
    """The contiguous τ range around the curve's best point where it stays within ``points``.

    Example:
        >>> plateau(np.array([0.0, 0.25, 0.5, 0.75]), np.array([10.0, 58.0, 60.0, 30.0]))
        (0.25, 0.5)
    """
    best = int(np.argmax(curve))
    keep = curve >= curve[best] - points
    lo = best
    while lo > 0 and keep[lo - 1]:
        lo -= 1
    hi = best
    while hi < len(curve) - 1 and keep[hi + 1]:
        hi += 1
    return float(thresholds[lo]), float(thresholds[hi])


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())


def save_curves(sweeps: Mapping[str, Sweeps], folder: Path) -> dict[str, Path]:
    """The threshold-sensitivity and precision-recall figures that ``sweeps`` allow.

    Returns:
        ``{"sensitivity": path, "precision_recall": path}`` for the figures written (box
        sweeps give the first, mask sweeps the second).
    """
    figure_cls = require_matplotlib()
    written: dict[str, Path] = {}
    boxes = {label: s.box_v2 for label, s in sweeps.items() if s.box_v2 is not None}
    if boxes:
        ious = next(iter(boxes.values())).settings["iou_thresholds"]
        fig = figure_cls(figsize=(3.8 * len(ious), 3.4), layout="constrained")
        axes = fig.subplots(1, len(ious), sharex=True, sharey=True, squeeze=False)[0]
        for ax, iou in zip(axes, ious, strict=True):
            for (label, result), colour in zip(boxes.items(), _COLOURS * 4, strict=False):
                ax.plot(result.thresholds, result.curves[iou], color=colour, label=label, lw=1.6)
            ax.set_title(f"IoU ≥ {iou} %")
            ax.set_xlabel("CAM threshold τ")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 102)  # a curve at 100 % stays visible above the frame
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("BoxAcc(τ) %")
        axes[0].legend(loc="best", fontsize="small")
        written["sensitivity"] = _save(fig, folder / "threshold_sensitivity.png")
    masks = {label: s.masks for label, s in sweeps.items() if s.masks is not None}
    if masks:
        fig = figure_cls(figsize=(4.6, 4.0), layout="constrained")
        ax = fig.subplots()
        for (label, pr), colour in zip(masks.items(), _COLOURS * 4, strict=False):
            keep = np.isfinite(pr.precision)
            ax.plot(pr.recall[keep], pr.precision[keep], color=colour, lw=1.6,
                    label=f"{label} (PxAP {pr.value:.1f})")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        written["precision_recall"] = _save(fig, folder / "precision_recall.png")
    return written


def save_thumbnail(
    path: Path, rgb: torch.Tensor, heat: torch.Tensor, gt: np.ndarray, pred: np.ndarray,
    size: int,
) -> tuple[int, int]:
    """An overlay of ``heat`` on ``rgb`` ((H, W, 3) uint8) with the ground-truth boxes ``gt``
    in green and the estimated ``pred`` in red, shrunk to ``size`` pixels on its long side and
    saved as a JPEG (a few kB). Returns its (width, height)."""
    tile = Image.fromarray(overlay(rgb.cpu().numpy(), heat.cpu(), alpha=0.45))
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    thumb = tile.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                        Image.Resampling.BILINEAR)
    draw_boxes(thumb, gt, (scale, scale), GT_BOX_COLOUR)
    draw_boxes(thumb, pred, (scale, scale), PRED_BOX_COLOUR)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    atomic_write_bytes(path, buffer.getvalue())
    return thumb.size


def boxes_list(items: Sequence[Any]) -> list[np.ndarray]:
    """Per-image ``(M, 4)`` float arrays from tensors, arrays or lists."""
    out = []
    for b in items:
        array = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
        out.append(array.astype(np.float64).reshape(-1, 4))
    return out
