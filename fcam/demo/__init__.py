"""The ``fcam demo`` pipeline and its building blocks (cached classifier training)."""

from __future__ import annotations

from fcam.demo.cache import cache_dir
from fcam.demo.classifier import (
    ClassifierConfig,
    build_classifier,
    evaluate_accuracy,
    train_classifier,
)

__all__ = [
    "ClassifierConfig",
    "build_classifier",
    "cache_dir",
    "evaluate_accuracy",
    "train_classifier",
]
