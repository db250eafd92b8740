"""The ``fcam demo`` pipeline and its building blocks (cached classifier training, scoring).

:func:`evaluate_localization` and :class:`LocalizationScores` are re-exported from
:mod:`fcam.evaluation`, where they live.

Attributes load lazily so that ``fcam --help`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClassifierConfig": "fcam.demo.classifier",
    "build_classifier": "fcam.demo.classifier",
    "evaluate_accuracy": "fcam.demo.classifier",
    "load_classifier": "fcam.demo.classifier",
    "save_classifier": "fcam.demo.classifier",
    "train_classifier": "fcam.demo.classifier",
    "cache_dir": "fcam.demo.cache",
    "DemoConfig": "fcam.demo.config",
    "LocalizationScores": "fcam.evaluation",
    "evaluate_localization": "fcam.evaluation",
    "DemoResult": "fcam.demo.pipeline",
    "run_demo": "fcam.demo.pipeline",
}

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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fcam.demo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
