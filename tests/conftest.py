"""Fixtures shared by every test folder.

``device`` runs a test once on the CPU and once on CUDA: the CUDA variant carries the ``cuda``
marker (``pytest -m cuda`` selects exactly those; ``benchmarks/gpu_check.py`` runs them) and is
skipped without a GPU, so each CUDA test has a CPU twin that runs everywhere.
"""

from __future__ import annotations

import pytest
import torch

_NO_CUDA = not torch.cuda.is_available()

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(_NO_CUDA, reason="needs CUDA")]
    ),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """``cpu``, then ``cuda`` (marked ``cuda``; skipped without a GPU)."""
    return torch.device(request.param)
