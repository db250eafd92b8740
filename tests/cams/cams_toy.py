"""Tiny hand-computable model shared by the fcam.cams tests (imported by conftest and tests)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Two 3x3 activation channels, chosen so every method can be worked out by hand.
A0 = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]  # S_0 = 4, sum A^2 = 6, max 2
A1 = [[0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]  # S_1 = 4, sum A^2 = 8, max 2
FC = [[1.0, 0.5], [-1.0, 1.0]]  # logits y_c = sum_k FC[c][k] * mean(A_k^2)


class Square(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * x


class ToyNet(nn.Module):
    """features (identity 1x1 conv, so A = x) -> ReLU -> square -> GAP -> fc (no bias).

    For non-negative x: y_c = sum_k FC[c][k] / 9 * sum_ij A_k(i,j)^2, hence
    dy_c/dA_k = 2/9 * FC[c][k] * A_k (with relu(A_k) in place of A_k in general).
    """

    def __init__(self, inplace_relu: bool = False) -> None:
        super().__init__()
        self.features = nn.Conv2d(2, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=inplace_relu)  # identity on the non-negative toy input
        self.square = Square()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(2)[:, :, None, None])
            self.fc.weight.copy_(torch.tensor(FC))
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.square(self.relu(self.features(x)))).flatten(1))
