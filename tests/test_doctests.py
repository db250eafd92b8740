"""Run the docstring examples of every fcam module (one test per module).

Examples need no imports of their own for ``torch``, ``nn`` (``torch.nn``), ``F``
(``torch.nn.functional``), ``np`` and ``torchvision``; the module's own names are there too.
Each module runs in a fresh temporary working directory with ``torch.manual_seed(0)``, so
examples may write files. Examples that cannot run quickly on a CPU (downloads, training,
large models) carry ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fcam

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

#: Modules whose import has side effects (``python -m fcam`` runs the CLI).
NOT_DOCTESTED = {"fcam.__main__"}

BASE_GLOBS: dict[str, Any] = {"torch": torch, "nn": nn, "F": F, "np": np,
                              "torchvision": torchvision}

_IMPORT_ERRORS: dict[str, str] = {}


def _record_error(name: str) -> None:
    _IMPORT_ERRORS[name] = f"{name} failed to import while listing the package"


def _modules() -> list[str]:
    names = ["fcam"]
    for info in pkgutil.walk_packages(fcam.__path__, prefix="fcam.", onerror=_record_error):
        if info.name not in NOT_DOCTESTED:
            names.append(info.name)
    return sorted(set(names) | set(_IMPORT_ERRORS))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    globs = {**BASE_GLOBS, **vars(module)}
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    out = io.StringIO()
    torch.manual_seed(0)
    for test in finder.find(module, name, globs=globs):
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed:\n" + (
        out.getvalue()
    )
