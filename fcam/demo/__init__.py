"""The ``fcam demo`` pipeline and its building blocks (cached classifier training)."""

from __future__ import annotations

from fcam.demo.cache import cache_dir
from fcam.demo.classifier import (
    ClassifierConfig,
    build_classifier,
    evaluate_accuracy,
    load_classifier,
    save_classifier,
    train_classifier,
)
from fcam.demo.evaluation import LocalizationScores, evaluate_localization
from fcam.demo.pipeline import DemoConfig, DemoResult, run_demo

__all__ = [
    "ClassifierConfig",
    "DemoConfig",
    "DemoResult",
    "LocalizationScores",
    "build_classifier",
    "cache_dir",
    "evaluate_accuracy",
    "evaluate_localization",
    "load_classifier",
    "run_demo",
    "save_classifier",
    "train_classifier",
]
