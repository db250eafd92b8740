r"""Adversarial Complementary Learning (Zhang et al., CVPR 2018), as in wsolevaluation.

Two classifier heads A and B read the same features. B sees them with the most
discriminative region of A's class map erased, so it has to find the rest of the object; the
CAM is the element-wise max of the two min-max-normalised class maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcam.cams.maps import normalize
from fcam.wsol.augment import check_probability

__all__ = ["AcolHeads", "acol_erase", "acol_loss", "class_head"]


def class_head(in_channels: int, num_classes: int, width: int = 1024) -> nn.Sequential:
    """ACoL's classifier head: conv3×3-``width``, ReLU, conv3×3-``width``, ReLU, conv1×1-C.

    Example:
        >>> class_head(8, 3, width=4)(torch.zeros(1, 8, 5, 5)).shape
        torch.Size([1, 3, 5, 5])
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(width, num_classes, 1),
    )


def acol_erase(features: Tensor, attention: Tensor, threshold: float = 0.7) -> Tensor:
    r"""ACoL's feature erasing: zero every position where the normalised attention reaches
    ``threshold``.

    .. math::
        \tilde F_b = F_b \odot \big[\hat a_b < \theta\big], \qquad
        \hat a_b = \frac{a_b - \min a_b}{\max a_b - \min a_b}

    :math:`a_b` is head A's map of the image's class; the min-max normalisation per image is
    idempotent, so an already normalised attention may be passed. The mask carries no gradient.

    Example:
        >>> f = torch.ones(1, 2, 1, 3)
        >>> acol_erase(f, torch.tensor([[[0.0, 5.0, 10.0]]]), threshold=0.5)
        tensor([[[[1., 0., 0.]],
        <BLANKLINE>
                 [[1., 0., 0.]]]])

    Args:
        features: ``(B, C, h, w)`` features.
        attention: ``(B, h, w)`` or ``(B, 1, h, w)`` class maps.
        threshold: erase where the normalised attention is ``>= threshold``, in ``[0, 1]``.

    Returns:
        The erased features, a new tensor.

    Raises:
        ValueError: bad shapes or a threshold outside ``[0, 1]``.
    """
    check_probability(threshold, "threshold")
    if features.ndim != 4:
        raise ValueError(f"`features` must be 4-D (B, C, h, w), got shape {tuple(features.shape)}")
    att = attention.detach()
    att = att[:, None] if att.ndim == 3 else att
    if att.ndim != 4 or att.shape[1] != 1 or att.shape[0] != features.shape[0] or (
        att.shape[-2:] != features.shape[-2:]
    ):
        raise ValueError(
            f"`attention` must be (B, h, w) matching features {tuple(features.shape)}, got "
            f"{tuple(attention.shape)}"
        )
    keep = normalize(att.float()) < threshold
    return features * keep.to(features.dtype)


class AcolHeads(nn.Module):
    """ACoL's two heads on one feature map (:func:`class_head` each).

    Example:
        >>> heads = AcolHeads(8, 3, width=4)
        >>> out = heads(torch.rand(2, 8, 4, 4), labels=torch.tensor([0, 2]))
        >>> out["logits"].shape, out["logits_b"].shape
        (torch.Size([2, 3]), torch.Size([2, 3]))

    Args:
        in_channels: feature channels.
        num_classes: number of classes.
        width: hidden width of both heads (1024 in wsolevaluation).
        threshold: erasing threshold (0.7 in wsolevaluation).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 1024,
                 threshold: float = 0.7) -> None:
        super().__init__()
        self.threshold = check_probability(threshold, "threshold")
        self.head_a = class_head(in_channels, num_classes, width)
        self.head_b = class_head(in_channels, num_classes, width)

    def forward(self, features: Tensor, labels: Tensor | None = None,
                branch_b: bool = True) -> dict[str, Tensor]:
        """Logits of both heads (``labels`` pick A's map to erase; ``None``: A's prediction)."""
        map_a = self.head_a(features)
        logits = map_a.mean(dim=(-2, -1))
        out = {"logits": logits, "map_a": map_a}
        if branch_b:
            picked = logits.argmax(1) if labels is None else labels
            attention = map_a[torch.arange(map_a.shape[0], device=map_a.device), picked]
            map_b = self.head_b(acol_erase(features, attention, self.threshold))
            out.update(logits_b=map_b.mean(dim=(-2, -1)), map_b=map_b)
        return out

    def cams(self, features: Tensor, targets: Tensor) -> Tensor:
        """``max(normalize(A_c), normalize(B_c))`` for class ``c = targets`` (B sees the erased
        features of that class)."""
        out = self(features, targets)
        rows = torch.arange(features.shape[0], device=features.device)
        map_a = normalize(out["map_a"][rows, targets])
        map_b = normalize(out["map_b"][rows, targets])
        return torch.maximum(map_a, map_b)


def acol_loss(outputs: dict[str, Tensor], labels: Tensor) -> Tensor:
    r"""ACoL's loss :math:`\mathrm{CE}(A) + \mathrm{CE}(B)`.

    Example:
        >>> z = torch.zeros(2, 4)
        >>> round(acol_loss({"logits": z, "logits_b": z}, torch.tensor([0, 1])).item(), 4)
        2.7726
    """
    return F.cross_entropy(outputs["logits"], labels) + F.cross_entropy(outputs["logits_b"], labels)
