"""Reports of the demo: the tables come from :mod:`fcam.evaluation.report`; PNG overlays are
written atomically by :func:`fcam.core.io.atomic_write_png` (re-exported as ``write_png``)."""

from __future__ import annotations

from fcam.core.io import atomic_write_png as write_png
from fcam.evaluation.report import COLUMNS, format_table, gain_lines, results_json

__all__ = ["COLUMNS", "format_table", "gain_lines", "results_json", "write_png"]
