"""Fixtures for the fcam.cams tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from cams_toy import A0, A1, ToyNet
from torch import Tensor


@pytest.fixture
def toy() -> ToyNet:
    return ToyNet().double()


@pytest.fixture
def toy_input() -> Tensor:
    return torch.tensor([A0, A1], dtype=torch.float64)[None]


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # On small shared CI boxes torch's OpenMP pool spins against other processes and tiny
    # ops become orders of magnitude slower; these tests use small tensors anyway.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
