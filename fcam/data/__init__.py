"""Datasets: an embedded synthetic WSOL benchmark and loaders for the wsolevaluation layout."""

from __future__ import annotations

from fcam.data.synthetic import CLASSES, SyntheticWSOL, generate_sample

__all__ = ["CLASSES", "SyntheticWSOL", "generate_sample"]
