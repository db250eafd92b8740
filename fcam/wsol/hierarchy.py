"""A data-driven class hierarchy for DANet when none is given: k-means on classifier weights.

DANet's hierarchical heads need coarser labels (CUB's orders and families). Without them,
classes whose classifier weights point the same way are grouped: k-means on the L2-normalised
rows of the last linear layer gives the parents, k-means on the normalised parent centroids
gives the roots, and so on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fcam.core.validation import check_int

__all__ = ["hierarchy_from_weights", "kmeans"]


def kmeans(points: Tensor, k: int, seed: int = 0, iterations: int = 100) -> Tensor:
    """Lloyd's k-means with k-means++ seeding; returns one cluster id per row of ``points``.

    Every cluster keeps at least one point (an empty cluster takes the worst-fitted point of a
    cluster that has several), and ids are numbered by first appearance, so the result is deterministic for
    a given ``seed``.

    Example:
        >>> pts = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.1, 0.0], [5.0, 5.1]])
        >>> kmeans(pts, 2).tolist()
        [0, 1, 0, 1]

    Raises:
        ValueError: ``points`` not 2-D, or ``k`` not in ``[1, len(points)]``.
    """
    if points.ndim != 2:
        raise ValueError(f"`points` must be (n, d), got shape {tuple(points.shape)}")
    n = points.shape[0]
    check_int(k, "k")
    if k > n:
        raise ValueError(f"`k` ({k}) exceeds the number of points ({n})")
    pts = points.detach().to("cpu", torch.float64)
    gen = torch.Generator().manual_seed(seed)
    centres = [pts[int(torch.randint(n, (1,), generator=gen))]]
    for _ in range(1, k):
        dist = torch.cdist(pts, torch.stack(centres)).amin(dim=1).square()
        if float(dist.sum()) <= 0:  # duplicates only: pick any point not yet a centre
            nxt = len(centres)
        else:
            nxt = int(torch.multinomial(dist / dist.sum(), 1, generator=gen))
        centres.append(pts[nxt])
    centre = torch.stack(centres)
    assign = _fill_empty(torch.cdist(pts, centre).argmin(dim=1), pts, centre, k)
    for _ in range(iterations):
        centre = torch.stack([pts[assign == c].mean(dim=0) for c in range(k)])
        new = _fill_empty(torch.cdist(pts, centre).argmin(dim=1), pts, centre, k)
        if torch.equal(new, assign):
            break
        assign = new
    order = {c: i for i, c in enumerate(dict.fromkeys(assign.tolist()))}
    return torch.tensor([order[c] for c in assign.tolist()])


def _fill_empty(assign: Tensor, pts: Tensor, centre: Tensor, k: int) -> Tensor:
    """Give each empty cluster the worst-fitted point of a cluster that has more than one."""
    assign = assign.clone()
    for c in range(k):
        if bool((assign == c).any()):
            continue
        sizes = torch.bincount(assign, minlength=k)
        dist = (pts - centre[assign]).norm(dim=1)
        dist[sizes[assign] < 2] = -1.0  # never empty the donor
        assign[int(dist.argmax())] = c
    return assign


def hierarchy_from_weights(fc_weight: Tensor, sizes: Sequence[int], seed: int = 0) -> list[list[int]]:
    """A class → parent → root hierarchy for DANet by k-means on normalised class weights.

    Level 0 clusters the L2-normalised rows of ``fc_weight`` (one per class) into
    ``sizes[0]`` parents; level ``l`` clusters the normalised mean directions of level
    ``l - 1``'s clusters into ``sizes[l]`` nodes (:func:`kmeans`). The paper suggests about
    ``C/5`` parents and ``C/20`` roots. Pass the result as ``hierarchy=`` to
    :func:`fcam.wsol.build`.

    Example:
        >>> w = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> hierarchy_from_weights(w, [2])
        [[0, 0, 1, 1]]

    Args:
        fc_weight: ``(C, D)`` weights of a trained classifier's last linear layer (a
            ``(C, D, 1, 1)`` 1×1 convolution is flattened).
        sizes: nodes per coarser level, strictly decreasing, each at least 1 and below the
            size of the level under it.
        seed: k-means seed.

    Returns:
        The per-level parent-index lists (``hierarchy[0][c]`` = parent of class ``c``).

    Raises:
        ValueError: bad ``fc_weight`` or ``sizes``.
    """
    if not isinstance(fc_weight, Tensor) or fc_weight.ndim < 2:
        raise ValueError("`fc_weight` must be a (C, D) tensor")
    points = F.normalize(fc_weight.detach().flatten(1).to("cpu", torch.float64), dim=1)
    if isinstance(sizes, (int, str)) or not sizes:
        raise ValueError(f"`sizes` must be a non-empty list of ints, got {sizes!r}")
    hierarchy: list[list[int]] = []
    for size in sizes:
        check_int(size, "sizes")
        if size >= points.shape[0]:
            raise ValueError(f"`sizes` must decrease: {size} nodes over a level of {points.shape[0]}")
        assign = kmeans(points, int(size), seed=seed)
        hierarchy.append(assign.tolist())
        points = F.normalize(torch.stack([points[assign == c].mean(dim=0) for c in range(size)]), dim=1)
    return hierarchy
