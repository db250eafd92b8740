"""Results tables (plain text, Markdown, JSON) and atomic text/PNG writes for the demo."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fcam.data.wsol_writer import atomic_write_bytes
from fcam.demo.evaluation import LocalizationScores

__all__ = [
    "COLUMNS",
    "atomic_write_png",
    "atomic_write_text",
    "format_table",
    "gain_lines",
    "results_json",
]

# (header, LocalizationScores attribute)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("PxAP", "pxap"),
    ("MaxBoxAccV2", "maxboxacc_v2"),
    ("MaxBoxAcc", "maxboxacc"),
    ("Top-1 Loc", "top1_loc"),
)


def _cell(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.1f}"


def format_table(rows: Mapping[str, LocalizationScores], markdown: bool = False) -> str:
    """The method × metric table, as aligned plain text or as a Markdown table.

    Args:
        rows: ``{method label: scores}`` in display order.
        markdown: emit a GitHub Markdown table instead of aligned text.
    """
    header = ["method", *(name for name, _ in COLUMNS)]
    body = [[label, *(_cell(getattr(s, attr)) for _, attr in COLUMNS)] for label, s in rows.items()]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        )

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(r) for r in body)])


def results_json(
    rows: Mapping[str, LocalizationScores], extra: Mapping[str, Any] | None = None
) -> str:
    """The results (every score and its settings) and ``extra`` metadata as indented JSON."""
    payload: dict[str, Any] = dict(extra or {})
    payload["results"] = {label: s.to_dict() for label, s in rows.items()}
    return json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n"


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` (UTF-8) through a temporary file and :func:`os.replace`."""
    path = Path(path)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def atomic_write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` uint8 RGB array as a PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def gain_lines(pairs: Sequence[tuple[str, LocalizationScores, LocalizationScores]]) -> list[str]:
    """One line per (method, interpolated, F-CAM) pair with the PxAP / MaxBoxAccV2 gains."""
    lines = []
    for name, base, fcam in pairs:
        parts = [
            f"{header} {getattr(fcam, attr) - getattr(base, attr):+.1f}"
            for header, attr in COLUMNS[:2]
            if getattr(fcam, attr) is not None and getattr(base, attr) is not None
        ]
        lines.append(f"F-CAM gain over interpolated {name}: " + ", ".join(parts) + " points")
    return lines
