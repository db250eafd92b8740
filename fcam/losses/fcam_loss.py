"""The F-CAM training objective: seed cross-entropy + dense CRF + size barrier."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fcam.losses._validation import check_float_tensor
from fcam.losses.crf import DenseCRFLoss
from fcam.losses.seeds import SeedLoss
from fcam.losses.size import SizeLoss

__all__ = ["FCAMLoss"]


class FCAMLoss(nn.Module):
    """Sum of the three unsupervised F-CAM terms (method.md §2).

    .. math::
        \\mathcal{L} = \\lambda_{sl}\\,\\mathrm{CE}_{seeds}(z) + \\mathcal{L}_{crf}(I, \\mathrm{softmax}(z))
        + \\mathcal{L}_{size}(\\mathrm{softmax}(z))

    The CRF and size weights live in their modules (``DenseCRFLoss.weight``,
    ``SizeLoss.weight``); ``seed_weight`` is λ_sl.

    Args:
        seed: seed loss module (partial cross-entropy).
        crf: dense-CRF loss module, or None to disable the term.
        size: size-barrier loss module, or None to disable the term.
        seed_weight: λ_sl.

    Example:
        >>> loss = FCAMLoss()
        >>> logits = torch.randn(2, 2, 16, 16, requires_grad=True)
        >>> seeds = torch.full((2, 16, 16), -255); seeds[:, 0, 0] = 0; seeds[:, 8, 8] = 1
        >>> total, parts = loss(logits, seeds, torch.rand(2, 3, 16, 16) * 255)
        >>> sorted(parts)
        ['crf', 'seed', 'size']
        >>> total.backward()
        >>> round(loss.step(), 2)  # once per epoch: barrier t
        1.01
    """

    def __init__(self, seed: SeedLoss | None = None, crf: DenseCRFLoss | None = None,
                 size: SizeLoss | None = None, seed_weight: float = 1.0) -> None:
        super().__init__()
        if isinstance(seed_weight, bool) or not isinstance(seed_weight, (int, float)) \
                or not math.isfinite(seed_weight):
            raise ValueError(f"seed_weight must be a finite number, got {seed_weight!r}")
        self.seed = seed if seed is not None else SeedLoss()
        self.crf = crf if crf is not None else DenseCRFLoss()
        self.size = size if size is not None else SizeLoss()
        self.seed_weight = float(seed_weight)

    def forward(self, logits: Tensor, seeds: Tensor, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(total, {"seed": ..., "crf": ..., "size": ...})`` (parts are unweighted by
        ``seed_weight`` only for ``"seed"``; the CRF and size parts include their own weights)."""
        logits = check_float_tensor(logits, "logits", 4)
        probs = torch.softmax(logits, dim=1)
        parts = {"seed": self.seed(logits, seeds)}
        parts["crf"] = self.crf(images, probs) if self.crf is not None else logits.new_zeros(())
        parts["size"] = self.size(probs) if self.size is not None else logits.new_zeros(())
        total = self.seed_weight * parts["seed"] + parts["crf"] + parts["size"]
        return total, parts

    def step(self) -> float | None:
        """End-of-epoch update: advance the size barrier schedule; returns its new ``t``."""
        return self.size.step() if self.size is not None else None

    def extra_repr(self) -> str:
        return f"seed_weight={self.seed_weight}"
