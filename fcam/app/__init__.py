"""``fcam app``: a local web page showing a classifier's CAMs and F-CAM side by side.

* :mod:`fcam.app.core`: :func:`explain_image` (image, class, methods -> maps, boxes, timings),
  image loading with its size check, checkpoint loading, the methods that apply to a model;
* :mod:`fcam.app.examples`: the bundled example images (drawn procedurally);
* :mod:`fcam.app.page`: the Gradio page (``pip install "fcam[app]"``), a thin layer over the core.

Attributes load lazily: ``import fcam.app`` imports neither torch nor Gradio.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Explanation": "fcam.app.core",
    "MAX_PIXELS": "fcam.app.core",
    "Prediction": "fcam.app.core",
    "applicable_methods": "fcam.app.core",
    "explain_image": "fcam.app.core",
    "load_checkpoint": "fcam.app.core",
    "load_image": "fcam.app.core",
    "example_images": "fcam.app.examples",
    "AppConfig": "fcam.app.page",
    "build_page": "fcam.app.page",
    "serve": "fcam.app.page",
}

__all__ = [
    "MAX_PIXELS",
    "AppConfig",
    "Explanation",
    "Prediction",
    "applicable_methods",
    "build_page",
    "example_images",
    "explain_image",
    "load_checkpoint",
    "load_image",
    "serve",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fcam.app' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
