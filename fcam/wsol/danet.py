r"""DANet: divergent activation (Xue et al., ICCV 2019), on any CNN's last stages.

**DDA** (discrepant divergent activation): the class head gives :math:`K` maps per class; the
class map is their mean and the class logit its spatial mean. The cosine loss
(:func:`danet_cosine_loss`) pushes the ground-truth class's :math:`K` maps apart, so that they
cover different parts of the object.

**HDA** (hierarchical divergent activation), when a class hierarchy is given: one more head per
coarser level, each on a shallower stage (parent on the stage before the feature layer, root on
the one before that), trained with cross-entropy on the coarser labels; their maps join the
cosine loss and are summed with the class map at inference.

.. math::
    \mathcal L = \tfrac12 \sum_{l} \mathrm{CE}_l + \alpha\, \mathcal L_{cos}
    \quad\text{(with a hierarchy)}, \qquad
    \mathcal L = \mathrm{CE} + \alpha\, \mathcal L_{cos} \quad\text{(DDA alone)}

:math:`\mathcal L_{cos}` reads the ground-truth maps of every level *before* ReLU, upsampled to
the shallowest level's size; with a hierarchy a random subset of half of them
(:math:`1.5K` of :math:`3K`, as the reference) is drawn once per batch, from the training
generator; DDA alone uses all :math:`K`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcam.wsol.acol import class_head

__all__ = ["DANetHeads", "check_hierarchy", "danet_cosine_loss", "danet_loss"]


def danet_cosine_loss(maps: Tensor) -> Tensor:
    r"""DANet's discrepant divergent activation loss of ``(B, n, h, w)`` maps.

    .. math::
        \mathcal L_{cos} = \frac1B \sum_b \frac{\left|\sum_{i<j} \cos(m_{bi}, m_{bj})\right|}
        {n(n-1)/2}

    with the maps flattened; the absolute value is taken of each image's *sum*, so positive and
    negative cosines of pre-ReLU maps can cancel (as in the reference). An all-zero map has
    cosine 0 with every map.

    Example:
        >>> maps = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]]])   # (1, 3, 1, 2)
        >>> round(float(danet_cosine_loss(maps)), 4)   # (0 + 2 · 0.7071) / 3
        0.4714

    Raises:
        ValueError: ``maps`` is not 4-D or has fewer than two maps per image.
    """
    if maps.ndim != 4:
        raise ValueError(f"`maps` must be (B, n, h, w), got shape {tuple(maps.shape)}")
    n = maps.shape[1]
    if n < 2:
        raise ValueError(f"`maps` needs at least 2 maps per image, got {n}")
    unit = F.normalize(maps.flatten(2), dim=-1, eps=1e-12)
    gram = unit @ unit.transpose(1, 2)
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=maps.device), diagonal=1)
    pair_sums = gram[:, upper].sum(dim=1)
    return (pair_sums.abs() / (n * (n - 1) / 2)).mean()


def check_hierarchy(hierarchy: object, num_classes: int) -> list[list[int]]:
    """Validate a class hierarchy: a list of per-level parent-index lists, class → parent → root.

    ``hierarchy[0][c]`` is the parent of class ``c``; ``hierarchy[1][p]`` the root of parent
    ``p``; and so on. Level ``l`` has one entry per node of the level below, its indices run
    over ``0 .. n_l - 1`` (``n_l`` = the length of the next list, or the largest index + 1 at the
    top) and every node of ``0 .. n_l - 1`` has at least one child.

    Example:
        >>> check_hierarchy([[0, 0, 1], [0, 0]], num_classes=3)
        [[0, 0, 1], [0, 0]]

    Raises:
        ValueError: naming ``hierarchy``: not lists of ints, a level that skips a class (wrong
            length) or a node (no child), or an index out of range.
    """
    if hierarchy is None:
        return []
    if not isinstance(hierarchy, Sequence) or isinstance(hierarchy, str) or not hierarchy:
        raise ValueError("`hierarchy` must be a non-empty list of per-level parent-index lists")
    levels: list[list[int]] = []
    for level in hierarchy:
        if not isinstance(level, Sequence) or isinstance(level, str) or not level or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in level):
            raise ValueError(f"`hierarchy` levels must be non-empty lists of ints, got {level!r}")
        levels.append(list(level))
    below = num_classes
    for depth, level in enumerate(levels):
        if len(level) != below:
            raise ValueError(f"`hierarchy`[{depth}] must give a parent to each of the {below} nodes "
                             f"of the level below, got {len(level)} entries")
        size = len(levels[depth + 1]) if depth + 1 < len(levels) else max(level) + 1
        bad = [i for i in level if not 0 <= i < size]
        if bad:
            raise ValueError(f"`hierarchy`[{depth}] has indices out of range [0, {size}): {bad}")
        missing = sorted(set(range(size)) - set(level))
        if missing:
            raise ValueError(f"`hierarchy`[{depth}] skips node(s) {missing}: every parent needs a child")
        below = size
    return levels


def _xavier(module: nn.Module) -> nn.Module:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


class DANetHeads(nn.Module):
    """DANet's heads: one per level (class, parent, root, ...), each conv3×3-``width``, ReLU,
    conv3×3-``width``, ReLU, conv1×1 to ``n_level · k`` maps (Xavier init, zero bias).

    Example:
        >>> heads = DANetHeads([8, 4], [3, 2], k=2, width=4, hierarchy=[[0, 0, 1]])
        >>> out = heads([torch.rand(1, 8, 2, 2), torch.rand(1, 4, 4, 4)], torch.tensor([2]))
        >>> out["logits"].shape, out["gt_maps"].shape
        (torch.Size([1, 3]), torch.Size([1, 4, 4, 4]))

    Args:
        channels: input channels per level, the class level (deepest stage) first.
        sizes: classes per level (``num_classes`` first).
        k: maps per class (8 in the paper), at least 2.
        width: hidden width of every head.
        hierarchy: the validated parent-index lists (:func:`check_hierarchy`).
    """

    def __init__(self, channels: Sequence[int], sizes: Sequence[int], k: int, width: int,
                 hierarchy: Sequence[Sequence[int]] = ()) -> None:
        super().__init__()
        if len(channels) != len(sizes) or len(sizes) != len(hierarchy) + 1:
            raise ValueError("DANetHeads: one channel count and one size per level")
        self.k = k
        self.sizes = [int(s) for s in sizes]
        self.levels = nn.ModuleList(_xavier(class_head(c, n * k, width)) for c, n in zip(channels, sizes))
        for depth, parents in enumerate(hierarchy):
            self.register_buffer(f"parent_{depth}", torch.tensor(list(parents), dtype=torch.long))

    @property
    def num_classes(self) -> int:
        return self.sizes[0]

    def level_labels(self, labels: Tensor) -> list[Tensor]:
        """The labels of every level (class labels mapped up the hierarchy)."""
        out = [labels]
        for depth in range(len(self.sizes) - 1):
            out.append(getattr(self, f"parent_{depth}")[out[-1]])
        return out

    def raw_maps(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Every level's ``(B, n_l, k, h_l, w_l)`` maps before ReLU."""
        out = []
        for head, n, x in zip(self.levels, self.sizes, feats):
            maps = head(x)
            out.append(maps.view(maps.shape[0], n, self.k, *maps.shape[-2:]))
        return out

    def forward(self, feats: Sequence[Tensor], labels: Tensor | None = None) -> dict[str, Tensor]:
        """``logits`` (class level), ``logits_<l>`` of the coarser levels and, with labels,
        ``gt_maps``: the ground-truth maps of every level at the shallowest level's size."""
        raw = self.raw_maps(feats)
        out = {"logits": raw[0].mean(dim=(2, 3, 4))}
        for depth, maps in enumerate(raw[1:], start=1):
            out[f"logits_{depth}"] = maps.mean(dim=(2, 3, 4))
        if labels is not None:
            size = tuple(raw[-1].shape[-2:])
            rows = torch.arange(labels.shape[0], device=labels.device)
            gathered = [maps[rows, lab] for maps, lab in zip(raw, self.level_labels(labels))]
            out["gt_maps"] = torch.cat(
                [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in gathered], dim=1)
        return out

    def cams(self, feats: Sequence[Tensor], targets: Tensor | None) -> Tensor:
        """Sum over levels of :math:`\\frac1k\\sum_k \\mathrm{ReLU}(m_{c,k})`, each level at its
        own top-1 class (``targets=None``, as the reference) or at the targets mapped up the
        hierarchy, upsampled to the shallowest level's size."""
        raw = self.raw_maps(feats)
        if targets is None:
            wanted = [maps.mean(dim=(2, 3, 4)).argmax(1) for maps in raw]
        else:
            wanted = self.level_labels(targets)
        size = tuple(raw[-1].shape[-2:])
        rows = torch.arange(raw[0].shape[0], device=raw[0].device)
        total = torch.zeros(raw[0].shape[0], 1, *size, dtype=raw[0].dtype, device=raw[0].device)
        for maps, lab in zip(raw, wanted):
            level = maps[rows, lab].relu().mean(dim=1, keepdim=True)
            total = total + F.interpolate(level, size=size, mode="bilinear", align_corners=False)
        return total[:, 0]


def danet_loss(out: dict[str, Tensor], labels: Tensor, heads: DANetHeads, alpha: float,
               subset: int | None, generator: torch.Generator | None) -> Tensor:
    """DANet's training loss (module docstring) from :meth:`DANetHeads.forward`'s output.

    ``subset``: how many ground-truth maps enter the cosine loss (``None``: half of them with a
    hierarchy, all without); drawn once per batch from ``generator``.
    """
    levels = heads.level_labels(labels)
    ce = [F.cross_entropy(out["logits"], levels[0])]
    ce += [F.cross_entropy(out[f"logits_{d}"], levels[d]) for d in range(1, len(levels))]
    classification = ce[0] if len(ce) == 1 else 0.5 * sum(ce)  # type: ignore[operator]
    maps = out["gt_maps"]
    total = maps.shape[1]
    n = (total if len(levels) == 1 else max(2, -(-total // 2))) if subset is None else subset
    if not 2 <= n <= total:
        raise ValueError(f"`danet_subset` must be in [2, {total}], got {n}")
    if n < total:
        index = torch.randperm(total, generator=generator)[:n].to(maps.device)
        maps = maps[:, index]
    return classification + alpha * danet_cosine_loss(maps)
