r"""Self-produced Guidance (Zhang et al., ECCV 2018), as in wsolevaluation.

Auxiliary branches B1, B2 (sharing their last layers) and C predict one-channel foreground
logits that are trained with binary cross-entropy against three-valued pseudo-masks
(:func:`spg_mask`): B2 against the classifier's own class map, B1 against B2's prediction and
C against the mean of B1 and B2. Every map is compared at one common size (the input size; the
reference hard-codes 224 × 224).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcam.cams.maps import normalize
from fcam.wsol.augment import check_probability

__all__ = ["IGNORE", "SPG_THRESHOLDS", "SPGHeads", "spg_loss", "spg_mask"]

#: Label of the pixels that the BCE terms ignore.
IGNORE = 255.0
#: wsolevaluation's ``(high, low)`` thresholds of the B2, B1 and C terms.
SPG_THRESHOLDS: tuple[tuple[float, float], ...] = ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))
#: Fewer foreground pixels than this and the foreground cut falls back to 0.7 · max.
MIN_FOREGROUND = 30


def spg_mask(attention: Tensor, high: float, low: float) -> Tensor:
    r"""SPG's three-valued pseudo-mask of a batch of attention maps in ``[0, 1]``.

    .. math::
        m = \begin{cases} 0 & a < \ell \\ 1 & a > h' \\ 255 & \text{otherwise (ignored)}
        \end{cases}, \qquad
        h' = \begin{cases} h & \#\{a > h\} \ge 30 \\ 0.7\max a & \text{otherwise}\end{cases}

    per image; background wins where both hold (the reference writes it last).

    Example:
        >>> a = torch.tensor([[[0.0, 0.3, 0.9]]])
        >>> spg_mask(a, high=0.5, low=0.1)       # 1 pixel > 0.5, so the cut is 0.7 * 0.9
        tensor([[[  0., 255.,   1.]]])

    Args:
        attention: ``(B, H, W)`` or ``(B, 1, H, W)`` maps, any size.
        high: foreground threshold, in ``[0, 1]``.
        low: background threshold, in ``[0, 1]``.

    Returns:
        A float mask shaped like ``attention`` with values 0, 1 and 255.

    Raises:
        ValueError: a threshold outside ``[0, 1]`` or a map that is not 3-D/4-D.
    """
    check_probability(high, "high")
    check_probability(low, "low")
    if attention.ndim not in (3, 4):
        raise ValueError(f"`attention` must be (B, H, W) or (B, 1, H, W), got {tuple(attention.shape)}")
    att = attention.detach()
    flat = att.flatten(1)
    few = ((flat > high).sum(dim=1) < MIN_FOREGROUND).view(-1, *([1] * (att.ndim - 1)))
    cut = torch.where(few, 0.7 * flat.amax(dim=1).view_as(few), torch.full_like(few, high, dtype=att.dtype))
    mask = torch.full_like(att, IGNORE)
    mask = torch.where(att > cut, torch.ones_like(att), mask)
    return torch.where(att < low, torch.zeros_like(att), mask)


def _masked_bce(logits: Tensor, mask: Tensor) -> Tensor:
    """Mean BCE-with-logits over the non-ignored pixels (0 when every pixel is ignored)."""
    valid = (mask < IGNORE).to(logits.dtype)
    target = mask.clamp(max=1.0).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * valid).sum() / valid.sum().clamp_min(1.0)


def _up(maps: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def spg_loss(
    outputs: dict[str, Tensor],
    labels: Tensor,
    thresholds: Sequence[Sequence[float]] = SPG_THRESHOLDS,
    size: Sequence[int] | None = None,
) -> Tensor:
    r"""SPG's loss: cross-entropy plus three masked BCE terms.

    With :math:`\uparrow` bilinear upsampling to ``size``, :math:`A` the normalised class map
    of the label, :math:`b_1, b_2, c` the branch logits and thresholds
    :math:`(h_1,\ell_1), (h_2,\ell_2), (h_3,\ell_3)`:

    .. math::
        \mathcal L = \mathrm{CE} + \mathrm{BCE}(\uparrow b_2, m(A; h_1, \ell_1))
        + \mathrm{BCE}(\uparrow b_1, m(\sigma(\uparrow b_2); h_2, \ell_2))
        + \mathrm{BCE}(\uparrow c, m(\tfrac12[\sigma(\uparrow b_1) + \sigma(\uparrow b_2)];
        h_3, \ell_3))

    each BCE averaged over the pixels that :func:`spg_mask` does not ignore (a term with no
    such pixel counts 0; the reference would give NaN).

    Example:
        >>> out = {"logits": torch.zeros(1, 2), "class_map": torch.rand(1, 2, 4, 4),
        ...        "logits_b1": torch.zeros(1, 1, 4, 4), "logits_b2": torch.zeros(1, 1, 4, 4),
        ...        "logits_c": torch.zeros(1, 1, 4, 4)}
        >>> bool(torch.isfinite(spg_loss(out, torch.tensor([1]), size=(8, 8))))
        True

    Args:
        outputs: ``logits`` (B, K), ``class_map`` (B, K, h, w) and the branch logits
            ``logits_b1``, ``logits_b2``, ``logits_c`` (B, 1, h', w').
        labels: ``(B,)`` classes.
        thresholds: three ``(high, low)`` pairs, each in ``[0, 1]``.
        size: common ``(H, W)`` of the masks; default the class map's size.

    Returns:
        The scalar loss.
    """
    pairs = [tuple(pair) for pair in thresholds]
    if len(pairs) != 3 or any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"spg_thresholds must be three (high, low) pairs, got {thresholds!r}")
    size = tuple(outputs["class_map"].shape[-2:]) if size is None else tuple(size)
    rows = torch.arange(labels.shape[0], device=labels.device)
    class_map = outputs["class_map"].detach()[rows, labels][:, None]
    attention = normalize(_up(class_map, size))
    b1, b2, c = (_up(outputs[k], size) for k in ("logits_b1", "logits_b2", "logits_c"))
    p1, p2 = torch.sigmoid(b1.detach()), torch.sigmoid(b2.detach())
    (h1, l1), (h2, l2), (h3, l3) = pairs
    return (
        F.cross_entropy(outputs["logits"], labels)
        + _masked_bce(b2, spg_mask(attention, h1, l1))
        + _masked_bce(b1, spg_mask(p2, h2, l2))
        + _masked_bce(c, spg_mask((p1 + p2) / 2.0, h3, l3))
    )


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


class SPGHeads(nn.Module):
    """SPG's heads: the class map (conv1×1-K on the features), the branches B1 (on an earlier
    stage), B2 (on the features) with a shared conv3×3-``width``, ReLU, conv1×1-1 tail, and C
    (conv3×3-``width/2``, ReLU, conv1×1-1 on the features).

    Example:
        >>> heads = SPGHeads(4, 8, 3, width=4)
        >>> out = heads(torch.rand(2, 8, 4, 4), torch.rand(2, 4, 8, 8))
        >>> out["logits"].shape, out["logits_b1"].shape, out["logits_c"].shape
        (torch.Size([2, 3]), torch.Size([2, 1, 8, 8]), torch.Size([2, 1, 4, 4]))

    Args:
        early_channels: channels of the earlier stage read by B1.
        in_channels: channels of the features.
        num_classes: number of classes.
        width: hidden width of the B branches (1024 in wsolevaluation's ResNet), C uses half.
    """

    def __init__(self, early_channels: int, in_channels: int, num_classes: int,
                 width: int = 1024) -> None:
        super().__init__()
        self.class_map = nn.Conv2d(in_channels, num_classes, 1)
        self.b1 = _conv_relu(early_channels, width)
        self.b2 = _conv_relu(in_channels, width)
        self.b_shared = nn.Sequential(_conv_relu(width, width), nn.Conv2d(width, 1, 1))
        self.c = nn.Sequential(_conv_relu(in_channels, max(width // 2, 1)),
                               nn.Conv2d(max(width // 2, 1), 1, 1))

    def forward(self, features: Tensor, early: Tensor | None = None) -> dict[str, Tensor]:
        """Logits and class maps; the branches only when ``early`` is given."""
        class_map = self.class_map(features)
        out = {"logits": class_map.mean(dim=(-2, -1)), "class_map": class_map}
        if early is not None:
            out["logits_b1"] = self.b_shared(self.b1(early))
            out["logits_b2"] = self.b_shared(self.b2(features))
            out["logits_c"] = self.c(features)
        return out
