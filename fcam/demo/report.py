"""Reports of the demo: the tables come from :mod:`fcam.evaluation.report`; PNG overlays are
written atomically through :mod:`fcam.core.io`."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from fcam.core.io import atomic_write_bytes
from fcam.evaluation.report import COLUMNS, format_table, gain_lines, results_json

__all__ = ["COLUMNS", "format_table", "gain_lines", "results_json", "write_png"]


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Encode an ``(H, W, 3)`` uint8 RGB array as PNG and write it atomically."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
