"""Fixtures for the fcam.cams tests."""

from __future__ import annotations

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
