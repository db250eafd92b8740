"""Results tables (plain text, Markdown, JSON) of :class:`~fcam.evaluation.LocalizationScores`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fcam.evaluation.localization import LocalizationScores

__all__ = ["COLUMNS", "format_table", "gain_lines", "results_json"]

#: ``(header, LocalizationScores attribute)`` of every table column, in display order.
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

    Example:
        >>> s = LocalizationScores(50.0, None, None, None, 90.0, 3)
        >>> print(format_table({"CAM": s}, markdown=True).splitlines()[-1])
        | CAM | 50.0 | n/a | n/a | n/a |

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
