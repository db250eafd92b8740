"""``write_report``: one HTML page with the metrics, the threshold sweeps behind them and the
images where each map producer fails or succeeds most.

The page shows, for every map producer (e.g. ``{"Grad-CAM++": cams, "F-CAM": maps}``):

* the metrics table (PxAP, MaxBoxAccV2, MaxBoxAcc, Top-1 Loc) of :mod:`fcam.evaluation`;
* the threshold-sensitivity figure: BoxAcc(τ) at IoU 30/50/70 for every producer on shared
  axes (F-CAM's paper, "sensitivity to threshold"), and each curve's plateau, the τ range
  within 5 points of its best;
* the pixel precision-recall curves behind PxAP;
* a failure gallery (the images with the lowest best-threshold IoU) and a best-case gallery,
  as overlays with the ground-truth boxes in green and the estimated box in red;
* the run's metadata (``meta``, plus the fcam version and date).

The curves, the table and the gallery's ranking come from one pass of the metrics'
evaluators (:class:`~fcam.evaluation.Sweeps`); nothing is computed twice.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcam.core.io import atomic_write_text
from fcam.core.overlay import image_to_tensor
from fcam.core.validation import check_int, check_maps, check_number
from fcam.evaluation.figures import (
    boxes_list,
    plateau,
    require_matplotlib,
    save_curves,
    save_thumbnail,
)
from fcam.evaluation.localization import Sweeps, _Evaluators
from fcam.evaluation.report import COLUMNS
from fcam.metrics import box_iou, boxes_at_thresholds

__all__ = ["PLATEAU_POINTS", "write_report"]

logger = logging.getLogger(__name__)

#: A plateau is the τ range where BoxAcc stays within this many points of its best.
PLATEAU_POINTS = 5.0
_CHUNK = 64

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
figure{display:inline-block;margin:.3em;text-align:center;font-size:.8em}
img{border:1px solid #ddd;max-width:100%;height:auto}
#meta td{text-align:left}
.gallery{display:flex;flex-wrap:wrap}
"""


def _check_images(images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a (N, C, H, W) tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    return images


def _check_producers(maps: Any, images: torch.Tensor) -> dict[str, torch.Tensor]:
    if not isinstance(maps, Mapping) or not maps:
        raise ValueError("maps must be a non-empty mapping {producer name: (N, H, W) maps}")
    out = {}
    for label, values in maps.items():
        if not isinstance(label, str) or not label:
            raise TypeError(f"maps keys must be non-empty strings, got {label!r}")
        checked = check_maps(values, images.shape[0], f"maps[{label!r}]")
        if checked.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"maps[{label!r}] are {tuple(checked.shape[-2:])}, images are "
                             f"{tuple(images.shape[-2:])}")
        values = checked.detach().float().cpu()
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"maps[{label!r}] contains NaN or infinite values")
        if float(values.min()) < -1e-3 or float(values.max()) > 1 + 1e-3:
            raise ValueError(f"maps[{label!r}] must lie in [0, 1], got [{float(values.min()):.3g}, "
                             f"{float(values.max()):.3g}]")
        out[label] = values.clamp(0, 1)
    return out


def _sweep(maps: torch.Tensor, boxes: list[np.ndarray] | None, masks: torch.Tensor | None,
           labels: torch.Tensor | None, logits: torch.Tensor | None, interval: float) -> Sweeps:
    """The metrics' evaluators over ``maps`` in chunks, exactly as evaluate_localization."""
    evaluators = _Evaluators(interval)
    for start in range(0, maps.shape[0], _CHUNK):
        part = slice(start, start + _CHUNK)
        batch: dict[str, Any] = {}
        if boxes is not None:
            batch["boxes"] = boxes[part]
        if masks is not None:
            batch["mask"] = masks[part]
        count = maps[part].shape[0]
        label_part = labels[part] if labels is not None else torch.zeros(count, dtype=torch.long)
        evaluators.update(batch, maps[part], label_part,
                          logits[part] if logits is not None else None)
    return evaluators.sweeps(with_classifier=logits is not None)


def _ranking(sweeps: Sweeps, maps: torch.Tensor, masks: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the best-threshold IoU and its τ (boxes), else the mask IoU at PxAP's τ."""
    if sweeps.box_v2 is not None:
        return sweeps.box_v2.image_iou, sweeps.box_v2.image_tau
    assert sweeps.masks is not None and masks is not None
    tau = sweeps.masks.best_tau
    fg, gt = maps >= tau, masks.bool()
    inter = (fg & gt).flatten(1).sum(1).double()
    union = (fg | gt).flatten(1).sum(1).double().clamp(min=1)
    return (inter / union).numpy(), np.full(maps.shape[0], tau)


def _estimated_box(scoremap: torch.Tensor, tau: float, gt: np.ndarray) -> np.ndarray:
    """The box at ``tau`` (all contours, as MaxBoxAccV2) that overlaps the ground truth most."""
    found = boxes_at_thresholds(scoremap.numpy(), [tau], multi_contour=True)[0]
    if len(gt) == 0 or len(found) == 0:
        return found[:1].astype(np.float64)
    best = int(box_iou(found, gt.astype(np.int64)).max(axis=1).argmax())
    return found[best:best + 1].astype(np.float64)


def _cell(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "<td>n/a</td>"
    return f'<td data-value="{value!r}">{value:.2f}</td>'


def _metrics_table(sweeps: Mapping[str, Sweeps]) -> str:
    head = "".join(f"<th>{name}</th>" for name, _ in COLUMNS)
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(_cell(getattr(s.scores, attr)) for _, attr in COLUMNS) + "</tr>"
        for label, s in sweeps.items()
    )
    return f'<table id="metrics"><tr><th>map producer</th>{head}</tr>{rows}</table>'


def plateaus(sweeps: Mapping[str, Sweeps], points: float = PLATEAU_POINTS) -> dict[str, Any]:
    """Per producer and IoU: best BoxAcc, its τ and the plateau ``[lo, hi]`` within ``points``."""
    out: dict[str, Any] = {}
    for label, s in sweeps.items():
        if s.box_v2 is None:
            continue
        out[label] = {}
        for iou, curve in s.box_v2.curves.items():
            lo, hi = plateau(s.box_v2.thresholds, curve, points)
            out[label][iou] = {"best": float(curve.max()), "best_tau": s.box_v2.best_tau[iou],
                               "lo": lo, "hi": hi, "width": hi - lo}
    return out


def _plateau_table(found: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{iou}</td><td>{p['best']:.1f}</td>"
        f"<td>{p['best_tau']:.3f}</td><td>{p['lo']:.3f} – {p['hi']:.3f}</td>"
        f"<td>{p['width']:.3f}</td></tr>"
        for label, per_iou in found.items() for iou, p in per_iou.items()
    )
    return ('<table id="plateaus"><tr><th>map producer</th><th>IoU %</th><th>best BoxAcc</th>'
            f"<th>best τ</th><th>τ within {PLATEAU_POINTS:g} points</th><th>width</th></tr>"
            f"{rows}</table>")


def _meta_table(meta: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in meta.items())
    return f'<table id="meta">{rows}</table>'


def write_report(
    out_dir: str | os.PathLike[str],
    images: torch.Tensor,
    masks: torch.Tensor | None = None,
    boxes: Sequence[Any] | torch.Tensor | None = None,
    maps: Mapping[str, torch.Tensor] | None = None,
    title: str = "fcam evaluation report",
    meta: Mapping[str, Any] | None = None,
    *,
    labels: torch.Tensor | Sequence[int] | None = None,
    logits: torch.Tensor | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_ids: Sequence[str] | None = None,
    gallery_size: int = 8,
    thumb_size: int = 160,
    cam_curve_interval: float = 0.001,
) -> Path:
    """Write ``out_dir/index.html`` and its figures for the maps of one or more producers.

    Example:
        >>> images = torch.rand(4, 3, 32, 32)
        >>> boxes = [torch.tensor([[4, 4, 20, 20]])] * 4
        >>> maps = {"CAM": torch.rand(4, 32, 32)}
        >>> write_report("report", images, boxes=boxes, maps=maps).name  # doctest: +SKIP
        'index.html'

    Args:
        out_dir: the folder (created; an existing report there is overwritten).
        images: ``(N, C, H, W)`` images: floats in [0, 1], ``uint8``, or normalised floats
            with ``mean`` and ``std``.
        masks: ``(N, H, W)`` ground-truth masks in {0, 1} (PxAP and its PR curve).
        boxes: ground-truth boxes ``x0, y0, x1, y1`` in the images' frame, one ``(M_i, 4)``
            per image (MaxBoxAcc, the sensitivity figure and the galleries' ranking).
        maps: ``{producer name: (N, H, W) maps in [0, 1]}`` in display order.
        title: the page's title.
        meta: run metadata shown on the page (model, layer, checkpoint digest, ...); the fcam
            version, the date and the image count are added.
        labels, logits: ``(N,)`` true classes and ``(N, K)`` classifier scores, together: Top-1
            Loc.
        mean, std: the normalisation to undo for drawing ``images``.
        image_ids: names shown under the gallery thumbnails (default: the image index).
        gallery_size: images in each gallery.
        thumb_size: long side of a thumbnail in pixels.
        cam_curve_interval: threshold step of the sweeps (0.001, the protocol's).

    Returns:
        The path of ``index.html``.

    Raises:
        ImportError: matplotlib is missing (``pip install "fcam[report]"``).
        TypeError, ValueError: bad images, maps, ground truth or options.
    """
    require_matplotlib()
    images = _check_images(images)
    count = images.shape[0]
    producers = _check_producers(maps, images)
    if masks is None and boxes is None:
        raise ValueError("write_report needs ground truth: masks=, boxes= or both")
    if (labels is None) != (logits is None):
        raise ValueError("labels and logits must be given together (for Top-1 Loc)")
    gt_boxes = boxes_list(list(boxes)) if boxes is not None else None
    if gt_boxes is not None and len(gt_boxes) != count:
        raise ValueError(f"boxes holds {len(gt_boxes)} images, images hold {count}")
    gt_masks = check_maps(masks, count, "masks").cpu() if masks is not None else None
    label_t = torch.as_tensor(labels).reshape(-1).cpu() if labels is not None else None
    logit_t = torch.as_tensor(logits).cpu() if logits is not None else None
    if image_ids is not None and len(image_ids) != count:
        raise ValueError(f"image_ids holds {len(image_ids)} names, images hold {count}")
    gallery_size = check_int(gallery_size, "gallery_size", minimum=1)
    thumb_size = check_int(thumb_size, "thumb_size", minimum=16)
    check_number(cam_curve_interval, "cam_curve_interval", positive=True, maximum=1.0)

    out = Path(out_dir)
    figures = out / "figures"
    sweeps = {label: _sweep(m, gt_boxes, gt_masks, label_t, logit_t, cam_curve_interval)
              for label, m in producers.items()}
    curves = save_curves(sweeps, figures)
    found = plateaus(sweeps)

    names = list(image_ids) if image_ids is not None else [f"#{i}" for i in range(count)]
    galleries = []
    for p, (label, m) in enumerate(producers.items()):
        ious, taus = _ranking(sweeps[label], m, gt_masks)
        order = np.argsort(ious, kind="stable")
        for kind, picked in (("failures", order[:gallery_size]),
                             ("best", order[::-1][:gallery_size])):
            tiles = []
            for rank, i in enumerate(int(k) for k in picked):
                rgb = image_to_tensor(images[i], mean, std)
                gt = gt_boxes[i] if gt_boxes is not None else np.zeros((0, 4))
                pred = (_estimated_box(m[i], float(taus[i]), gt) if gt_boxes is not None
                        else np.zeros((0, 4)))
                name = f"{kind}-{p}-{rank}.jpg"
                width, height = save_thumbnail(figures / name, rgb, m[i], gt, pred, thumb_size)
                tiles.append(
                    f'<figure data-index="{i}" data-iou="{float(ious[i])!r}"><img src="figures/{name}" '
                    f'width="{width}" height="{height}" alt="{html.escape(names[i])}">'
                    f"<figcaption>{html.escape(names[i])} · IoU {ious[i]:.2f} · τ {taus[i]:.3f}"
                    "</figcaption></figure>")
            heading = "Failures" if kind == "failures" else "Best cases"
            galleries.append(
                f"<h3>{heading}: {html.escape(label)}</h3>"
                f'<div class="gallery" id="{kind}-{p}">{"".join(tiles)}</div>')

    from fcam import __version__

    info = {**(meta or {}), "images": f"{count} at {images.shape[-1]}×{images.shape[-2]}",
            "threshold step": cam_curve_interval, "fcam": __version__,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    sections = [f"<h1>{html.escape(title)}</h1>", "<h2>Metrics</h2>", _metrics_table(sweeps)]
    if "sensitivity" in curves:
        sections += [
            "<h2>Sensitivity to the threshold</h2>",
            ("<p>BoxAcc(τ) at IoU 30/50/70 over the CAM threshold τ (the curves MaxBoxAccV2 "
             "takes its maxima from). A flat curve needs no threshold tuned on annotated "
             "images.</p>"),
            '<img src="figures/threshold_sensitivity.png" alt="threshold sensitivity">',
            _plateau_table(found)]
    if "precision_recall" in curves:
        sections += ["<h2>Pixel precision–recall</h2>",
                     '<img src="figures/precision_recall.png" alt="precision-recall curves">']
    ranked_by = ("best-threshold box IoU" if gt_boxes is not None
                 else "mask IoU at PxAP's best threshold")
    intro = (f"<h2>Galleries</h2><p>Ranked by {ranked_by}; ground truth in green, the "
             "estimated box (at the image's best τ) in red.</p>")
    sections += [intro, *galleries,
                 "<h2>Run</h2>", _meta_table(info)]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(sections)}</body></html>\n")
    summary = {"title": title, "meta": {k: str(v) for k, v in info.items()},
               "results": {label: s.scores.to_dict() for label, s in sweeps.items()},
               "plateaus": {label: {str(k): v for k, v in per.items()} for label, per in found.items()}}
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2) + "\n")
    index = atomic_write_text(out / "index.html", page)
    logger.info("wrote the evaluation report %s", index)
    return index
