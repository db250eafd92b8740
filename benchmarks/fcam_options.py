"""``--fcam-option NAME=VALUE`` for the benchmark scripts: any :class:`fcam.FCAM` option."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["parse_options"]


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["crf_weight=1e-9", "colour_bins=0"]`` -> ``{"crf_weight": 1e-09, "colour_bins": 0}``
    (ints, then floats, else strings).

    Example:
        >>> parse_options(["colour_bins=0", "crf_weight=2e-9", "colour_mode=filter"])
        {'colour_bins': 0, 'crf_weight': 2e-09, 'colour_mode': 'filter'}
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--fcam-option: expected NAME=VALUE, got {pair!r}")
        for kind in (int, float):
            try:
                out[name] = kind(text)
                break
            except ValueError:
                continue
        else:
            out[name] = text
    return out
