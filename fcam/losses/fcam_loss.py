"""The F-CAM training objective: seed cross-entropy + dense CRF + size barrier."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fcam.core.validation import check_number
from fcam.losses._validation import check_float_tensor
from fcam.losses.crf import DenseCRFLoss
from fcam.losses.seeds import SeedLoss
from fcam.losses.size import SizeLoss

__all__ = ["FCAMLoss"]


class FCAMLoss(nn.Module):
    """Sum of the three unsupervised F-CAM terms (Belharbi et al., WACV 2022).

    .. math::
        \\mathcal{L} = \\lambda_{sl}\\,\\mathrm{CE}_{seeds}(z)
        + \\mathcal{L}_{crf}(I, \\mathrm{softmax}(z)) + \\mathcal{L}_{size}(\\mathrm{softmax}(z))

    The CRF and size weights live in their modules (``DenseCRFLoss.weight``,
    ``SizeLoss.weight``); ``seed_weight`` is λ_sl.

    Args:
        seed: seed loss module (default ``SeedLoss()``).
        crf: dense-CRF loss module (default ``DenseCRFLoss()``); set its ``weight`` to 0 to
            turn the term off.
        size: size-barrier loss module (default ``SizeLoss()``).
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
        self.seed = seed if seed is not None else SeedLoss()
        self.crf = crf if crf is not None else DenseCRFLoss()
        self.size = size if size is not None else SizeLoss()
        self.seed_weight = check_number(seed_weight, "seed_weight")

    def forward(self, logits: Tensor, seeds: Tensor,
                images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(total, {"seed": ..., "crf": ..., "size": ...})``.

        Args:
            logits: (B, 2, H, W) upscaler logits (channel 0 background, 1 foreground).
            seeds: (B, H, W) long seeds from :func:`fcam.losses.sample_seeds`.
            images: (B, 3, H, W) RGB in [0, 255], aligned with ``logits``.

        The ``"seed"`` part is before ``seed_weight``; the CRF and size parts include their
        modules' weights.
        """
        logits = check_float_tensor(logits, "logits", 4)
        probs = torch.softmax(logits, dim=1)
        parts = {"seed": self.seed(logits, seeds)}
        parts["crf"] = self.crf(images, probs)
        parts["size"] = self.size(probs)
        total = self.seed_weight * parts["seed"] + parts["crf"] + parts["size"]
        return total, parts

    def step(self) -> float:
        """End-of-epoch update: advance the size barrier schedule; returns its new ``t``."""
        return self.size.step()

    def extra_repr(self) -> str:
        return f"seed_weight={self.seed_weight}"
