"""Localisation evaluation of any map producer over a loader (WSOL metrics, GT-known).

* :func:`evaluate_localization`: PxAP, MaxBoxAccV2, MaxBoxAcc and top-1 localisation of a
  ``map_fn(images, labels)`` on a loader of dicts with ground-truth boxes and/or masks, for
  any classifier;
* :func:`cam_map_fn` (the interpolated-CAM baseline, through :func:`fcam.cams.cam_to_size`)
  and :func:`fcam_map_fn` (a fitted :class:`fcam.FCAM`);
* :func:`format_table`, :func:`results_json`, :func:`gain_lines`: reports;
* :func:`write_report`: an HTML page with the metrics, the threshold-sensitivity and
  precision-recall curves and failure galleries (needs ``pip install "fcam[report]"``).

Example:
    >>> from fcam import cams
    >>> from fcam.evaluation import cam_map_fn, evaluate_localization
    >>> with cams.create("cam", model, "layer4") as ext:                  # doctest: +SKIP
    ...     scores = evaluate_localization(cam_map_fn(ext), model, loader)
"""

from __future__ import annotations

from fcam.evaluation.localization import LocalizationScores, MapFn, Sweeps, evaluate_localization
from fcam.evaluation.maps import cam_map_fn, fcam_map_fn
from fcam.evaluation.page import write_report
from fcam.evaluation.report import COLUMNS, format_table, gain_lines, results_json

__all__ = [
    "COLUMNS",
    "LocalizationScores",
    "MapFn",
    "Sweeps",
    "cam_map_fn",
    "evaluate_localization",
    "fcam_map_fn",
    "format_table",
    "gain_lines",
    "results_json",
    "write_report",
]
