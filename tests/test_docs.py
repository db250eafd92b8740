"""The API reference (docs/api.rst) documents every public symbol, and only real ones.

Parses the reST source (no Sphinx needed): every ``.. auto*::`` / ``.. module::`` target is
imported, and every name in ``fcam.__all__`` and in the ``__all__`` of each public
sub-module of ``fcam`` must resolve to a documented object.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import fcam

DOCS = Path(__file__).resolve().parents[1] / "docs"
_DIRECTIVE = re.compile(
    r"^\s*\.\.\s+(auto(?:module|class|function|data|exception|attribute|method)|module|"
    r"currentmodule|py:data)::\s*(\S+)",
    re.MULTILINE,
)
# Sub-modules that are entry points, not API.
_NOT_API = {"fcam.__main__", "fcam.cli"}


def _documented_targets() -> list[tuple[str, str]]:
    """``(directive, fully qualified name)`` pairs; ``py:data`` names are relative to the
    current module, as Sphinx reads them."""
    targets = []
    current = ""
    for kind, name in _DIRECTIVE.findall((DOCS / "api.rst").read_text(encoding="utf-8")):
        if kind in ("automodule", "module", "currentmodule"):
            current = name
        if kind == "py:data":
            name = f"{current}.{name}" if current else name
        if kind != "currentmodule":
            targets.append((kind, name))
    return targets


def _resolve(dotted: str) -> Any:
    """Import ``a.b.c`` as a module, or as an attribute of the longest importable prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def _public_modules() -> list[ModuleType]:
    """``fcam``, the modules in ``fcam.__all__`` and every public direct child with ``__all__``."""
    modules: dict[str, ModuleType] = {"fcam": fcam}
    for name in fcam.__all__:
        value = getattr(fcam, name)
        if isinstance(value, ModuleType):
            modules[value.__name__] = value
    for info in pkgutil.iter_modules(fcam.__path__, "fcam."):
        leaf = info.name.rsplit(".", 1)[1]
        if leaf.startswith("_") or info.name in _NOT_API:
            continue
        module = importlib.import_module(info.name)
        if hasattr(module, "__all__"):
            modules[info.name] = module
    return list(modules.values())


def _public_symbols() -> list[Any]:
    return [
        pytest.param(f"{module.__name__}.{name}", getattr(module, name), id=f"{module.__name__}.{name}")
        for module in _public_modules()
        for name in module.__all__
    ]


def test_api_reference_exists_and_parses() -> None:
    targets = _documented_targets()
    assert len(targets) > 50, "docs/api.rst lost its autodoc directives"
    kinds = {kind for kind, _ in targets}
    assert {"automodule", "autoclass", "autofunction"} <= kinds


def test_every_documented_target_exists() -> None:
    missing = []
    for _, target in _documented_targets():
        try:
            _resolve(target)
        except (ImportError, AttributeError):
            missing.append(target)
    assert not missing, f"docs/api.rst documents names that do not exist: {missing}"


@pytest.mark.parametrize("qualified,obj", _public_symbols())
def test_public_symbol_is_documented(qualified: str, obj: Any) -> None:
    targets = {target for _, target in _documented_targets()}
    if qualified in targets:
        return
    # A re-export is documented once, under any public path (e.g. fcam.FCAM for
    # fcam.explainer.FCAM, or a constant under the module that defines it, where autodoc finds
    # its doc-comment): compare the objects themselves. Plain values (numbers, strings, tuples)
    # must also keep their name, since equal small values can be the same object by accident.
    name = qualified.rsplit(".", 1)[1]
    plain = not (isinstance(obj, (type, ModuleType)) or callable(obj))
    documented = [
        _resolve(target) for target in targets if not plain or target.rsplit(".", 1)[-1] == name
    ]
    assert any(obj is other for other in documented), (
        f"{qualified} is public (in __all__) but not in docs/api.rst"
    )


def test_toctree_pages_exist() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    pages = re.findall(r"^([a-z_/]+)$", index, re.MULTILINE)
    assert "api" in pages and "benchmarks" in pages
    for page in pages:
        assert (DOCS / f"{page}.md").is_file() or (DOCS / f"{page}.rst").is_file(), page
