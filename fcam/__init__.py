"""fcam: full-resolution class activation maps (F-CAM) for any PyTorch image classifier.

The public API is small:

>>> from fcam import FCAM
>>> fc = FCAM(model, target_layer="layer4", cam="gradcampp")  # doctest: +SKIP
>>> fc.fit(train_loader)                                       # doctest: +SKIP
>>> maps = fc.explain(images)                                  # doctest: +SKIP

Sub-packages: :mod:`fcam.core` (shared plumbing), :mod:`fcam.cams` (CAM extractors),
:mod:`fcam.losses` (F-CAM losses), :mod:`fcam.upscalers` (decoders), :mod:`fcam.metrics` (WSOL
metrics), :mod:`fcam.data` (datasets), :mod:`fcam.explainer` (F-CAM), :mod:`fcam.evaluation`
(localisation scores), :mod:`fcam.models` (classifier I/O), :mod:`fcam.wsol` (WSOL training
methods), :mod:`fcam.viz` (overlays); see ``docs/concepts/architecture.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "FCAM",
    "__version__",
    "cams",
    "core",
    "data",
    "evaluation",
    "losses",
    "metrics",
    "models",
    "upscalers",
    "viz",
    "wsol",
]

_SUBMODULES = {"cams", "core", "data", "evaluation", "losses", "metrics", "models", "upscalers", "viz", "wsol"}


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import fcam` and `fcam --version` fast.
    if name == "FCAM":
        from fcam.explainer import FCAM

        return FCAM
    if name in _SUBMODULES:
        return importlib.import_module(f"fcam.{name}")
    raise AttributeError(f"module 'fcam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
