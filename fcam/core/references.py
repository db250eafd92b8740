"""``"package.module:qualname"`` references to importable objects (model builders, callables).

A checkpoint cannot hold a function, but it can hold where to import it from.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_reference", "reference_of"]


def reference_of(obj: Any) -> str | None:
    """``"module:qualname"`` of an importable module-level object, else ``None``.

    Lambdas, closures and bound methods of instances have no reference.

    Example:
        >>> import math
        >>> reference_of(math.sqrt)
        'math:sqrt'
        >>> reference_of(lambda x: x) is None
        True
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    try:
        return f"{module}:{qualname}" if import_reference(f"{module}:{qualname}") is obj else None
    except ValueError:
        return None


def import_reference(reference: str) -> Any:
    """Import the object named by ``"package.module:qualname"``.

    Example:
        >>> import_reference("math:sqrt")(4.0)
        2.0

    Raises:
        ValueError: malformed reference, missing module or missing attribute.
    """
    if not isinstance(reference, str) or reference.count(":") != 1:
        raise ValueError(f"expected 'package.module:name', got {reference!r}")
    module_name, qualname = reference.split(":")
    if not module_name or not qualname:
        raise ValueError(f"expected 'package.module:name', got {reference!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} of {reference!r}: {exc}") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {qualname!r}")
        obj = getattr(obj, part)
    return obj
