r"""Erasing Integrated Learning (Mai, Yang & Luo, CVPR 2020): EIL and its multi-level MEIL.

In one forward pass, the features entering the last stage are copied with their most active
positions (channel-mean attention :math:`\ge \gamma\max`) set to zero. Both copies run through
the remaining layers *with the same weights* and both are trained with cross-entropy:

.. math::
    \mathcal L = \mathrm{CE}(s_u, y) + \sum_{l} \mathrm{CE}(s_e^{l}, y)

where :math:`s_u` are the logits of the unerased stream and :math:`s_e^l` those of the copy
erased at level :math:`l` (one level for EIL, several for MEIL). Only the unerased stream runs
at inference; the CAM is the plain CAM of the GAP + linear head.

The copies travel as extra images of the batch: a forward hook on each level's layer returns
``cat([x, x[:B] ⊙ M])``, so only the layers after the level run on the larger batch (the
shared-weight re-run of the reference code, without a second pass through the early layers).

**MEIL's "sequential" chaining** (the reference code releases EIL only): the levels are visited
in the order the forward reaches them; at each level the *unerased* stream is attended and
erased into a new copy, and the copies made at shallower levels continue through the deeper
levels unchanged (they are not erased again). So MEIL at two levels trains three streams,
:math:`s_u`, :math:`s_e^{1}`, :math:`s_e^{2}`, with the loss above.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcam.wsol.augment import check_probability

__all__ = ["default_erase_levels", "eil_loss", "eil_mask", "erasing"]


def eil_mask(attention: Tensor, threshold: float = 0.7) -> Tensor:
    r"""EIL's keep-mask: 1 where the attention is below ``threshold`` times its per-image max.

    .. math::
        M = \big[a < \gamma \max_{h,w} a\big]

    with :math:`a` the ``(B, 1, h, w)`` attention (``(B, h, w)`` is accepted and given the
    channel axis). The mask is a hard comparison: gradients reach the features only through
    :math:`x \odot M`.

    Example:
        >>> a = torch.tensor([[[[0.0, 0.5], [0.69, 1.0]]]])
        >>> eil_mask(a, 0.7)               # 1.0 >= 0.7 · 1.0 is erased, 0.69 is kept
        tensor([[[[1., 1.],
                  [1., 0.]]]])

    Args:
        attention: ``(B, 1, h, w)`` or ``(B, h, w)`` maps.
        threshold: :math:`\gamma` in ``[0, 1]`` (``erase_threshold``, 0.7 in the paper).

    Returns:
        A ``(B, 1, h, w)`` float mask (1 = kept, 0 = erased) in the attention's dtype.

    Raises:
        ValueError: ``threshold`` outside ``[0, 1]`` or a map that is not 3-D/4-D with one channel.
    """
    gamma = check_probability(threshold, "threshold")
    if attention.ndim == 3:
        attention = attention.unsqueeze(1)
    if attention.ndim != 4 or attention.shape[1] != 1:
        raise ValueError(f"`attention` must be (B, 1, h, w) or (B, h, w), got {tuple(attention.shape)}")
    att = attention.detach()
    peak = att.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    return (att < gamma * peak).to(attention.dtype)


def _erase_hook(batch: int, threshold: float) -> Any:
    def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise ValueError("an EIL level must output (B, C, h, w) features")
        unerased = output[:batch]
        mask = eil_mask(unerased.mean(dim=1, keepdim=True), threshold)
        return torch.cat([output, unerased * mask], dim=0)
    return hook


@contextlib.contextmanager
def erasing(model: nn.Module, layers: Sequence[str], batch: int, threshold: float) -> Iterator[None]:
    """Context in which each named layer of ``model`` appends an erased copy of the first
    ``batch`` images' features to its output (hooks removed on exit).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(1))
        >>> with erasing(net, ["0"], batch=2, threshold=0.7):
        ...     net(torch.rand(2, 1, 3, 3)).shape
        torch.Size([4, 18])
    """
    check_probability(threshold, "erase_threshold")
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(_erase_hook(batch, threshold)) for name in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def eil_loss(logits: Tensor, labels: Tensor) -> Tensor:
    r"""EIL/MEIL loss on the logits of every stream, stacked along the batch axis.

    ``logits`` is ``(S·B, K)`` (the unerased stream first, then one erased copy per level);
    the loss is the sum of the streams' mean cross-entropies.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])   # 1 image, 2 streams
        >>> round(float(eil_loss(logits, torch.tensor([0]))), 4)
        2.2539
    """
    batch = labels.shape[0]
    if logits.shape[0] % batch:
        raise ValueError(f"`logits` rows ({logits.shape[0]}) must be a multiple of the batch ({batch})")
    streams = logits.shape[0] // batch
    return F.cross_entropy(logits, labels.repeat(streams)) * streams


def _has_parameters_between(model: nn.Module, probe: Any, start: str, stop: str) -> bool:
    """Whether a module with its own parameters runs after ``start`` and up to ``stop``."""
    orders = {e.name: e.order for e in probe.events}
    modules = dict(model.named_modules())
    return any(
        orders[start] < e.order <= orders[stop]
        and next(iter(modules[e.name].parameters(recurse=False)), None) is not None
        for e in probe.events if e.name in modules
    )


def default_erase_levels(model: nn.Module, probe: Any, pyramid: Any, count: int) -> list[str]:
    """The inputs of the last ``count`` stages (shallowest first): the outputs of the deepest
    skips of ``pyramid``, passing over a skip followed only by parameter-free layers (VGG's
    last pooling), so that every erased copy runs through at least one convolution.

    Raises:
        ValueError: the model has fewer than ``count`` such stages.
    """
    skips = [s.name for s in pyramid.skips if s is not None]
    if skips and not _has_parameters_between(model, probe, skips[0], pyramid.head.name):
        skips = skips[1:]
    if len(skips) < count:
        raise ValueError(f"`model` has {len(skips)} stage(s) before its feature layer; "
                         f"`levels` needs {count}")
    return skips[:count][::-1]
