"""Feature-pyramid discovery and capture for a frozen classifier.

F-CAM's decoder reads the classifier's own multi-scale features: the *head* (the CAM target
layer, the deepest map) plus one *skip* feature per spatial stride between the input and the
head. This module finds those features for an arbitrary ``nn.Module`` with one probe forward and
collects them at run time with context-managed forward hooks.

Discovery rule (general, no per-architecture tables):

1. Run a probe forward (eval mode, ``no_grad``, non-square zero input of size
   :data:`PROBE_SIZE`) with a forward hook on every sub-module, recording each module's
   **last** call in execution order (modules reused inside a block, such as the ``relu`` of a
   torchvision ``Bottleneck``, report their final call).
2. A module output is a *spatial map* of level :math:`\\ell` when it is a 4-D tensor
   ``(N, C, h, w)`` with :math:`\\mathrm{round}(\\log_2(H/h)) = \\mathrm{round}(\\log_2(W/w)) = \\ell`
   and both ratios within 0.5 of :math:`\\ell`. Using a non-square probe rejects channels-last
   tensors such as the ``(N, h, w, C)`` permutes inside ConvNeXt blocks.
3. The head is the target layer; its level :math:`L` is the output stride :math:`2^L`.
4. For each level :math:`1 \\le \\ell < L`, the skip is chosen among modules that finished
   before the target layer finished, are not the target itself, and output a level-:math:`\\ell`
   map: take the **shallowest** ones in the module tree (fewest dots in the qualified name) and,
   among those, the **last** executed. Stage containers (``layer3``, ``features.6``,
   ``denseblock2``, ``Mixed_6e``) finish after their children and sit higher in the tree, so they
   win over convolutions, in-block BatchNorms and in-place ReLUs; the shallow rule also keeps the
   first (pre-stride) convolution of the *next* stage (e.g. ``layer4.0.conv1`` in ResNet) from
   being taken as the stride-16 output.
5. Level 0 (full resolution) is never a skip, as in F-CAM (``f0`` is dropped).

Levels that no module produces (e.g. stride 2 in ConvNeXt, whose stem has stride 4) get no skip;
the decoder block for that level only upsamples. Passing ``skips=[...]`` (module names or
modules) overrides the discovery; their levels are still measured by the probe.

Vision transformers (torchvision ``VisionTransformer``, ``SwinTransformer``, ``MaxVit`` and any
model containing ``nn.MultiheadAttention``) are refused with a clear error: their token grids are
single-scale (ViT) or channels-last (Swin), so no faithful convolutional pyramid exists.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fcam.core.hooks import capture_features
from fcam.core.layers import PROBE_SIZE, ModelProbe, probe_model, resolve_layer

logger = logging.getLogger(__name__)

__all__ = ["FeatureLevel", "Pyramid", "capture_features", "discover_pyramid", "module_name"]

_TRANSFORMER_CLASSES = ("VisionTransformer", "SwinTransformer", "MaxVit")


@dataclass(frozen=True)
class FeatureLevel:
    """One feature of the pyramid.

    Attributes:
        name: qualified module name in ``model.named_modules()``.
        channels: number of channels of the module output.
        level: :math:`\\log_2` of the output stride (``3`` for stride 8).
    """

    name: str
    channels: int
    level: int


@dataclass(frozen=True)
class Pyramid:
    """The head feature plus the skip features, deepest first.

    Attributes:
        head: the target-layer feature (deepest map, also the CAM layer).
        skips: one entry per level ``head.level - 1, ..., 1``; ``None`` where the model has no
            feature at that stride.
    """

    head: FeatureLevel
    skips: tuple[FeatureLevel | None, ...]

    @property
    def names(self) -> list[str]:
        """Module names to hook: the head first, then the present skips."""
        return [self.head.name] + [s.name for s in self.skips if s is not None]

    def to_dict(self) -> dict[str, object]:
        """Plain-python description (stored in checkpoints)."""

        def one(f: FeatureLevel | None) -> list[object] | None:
            return None if f is None else [f.name, f.channels, f.level]

        return {"head": one(self.head), "skips": [one(s) for s in self.skips]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pyramid:
        """Inverse of :meth:`to_dict`."""

        def one(v: Any) -> FeatureLevel | None:
            if v is None:
                return None
            return FeatureLevel(str(v[0]), int(v[1]), int(v[2]))

        head = one(data["head"])
        if head is None:
            raise ValueError("pyramid description has no head")
        return cls(head=head, skips=tuple(one(s) for s in data["skips"]))


def module_name(model: nn.Module, layer: nn.Module | str) -> str:
    """Qualified name of ``layer`` inside ``model`` (:func:`fcam.core.layers.resolve_layer`).

    Raises:
        TypeError: if ``layer`` is neither a module nor a string.
        ValueError: if ``layer`` is not a sub-module (or a valid dotted name) of ``model``.
    """
    return resolve_layer(model, layer)[0]


def _refuse_transformers(model: nn.Module) -> None:
    for mod in model.modules():
        cls = type(mod).__name__
        if isinstance(mod, nn.MultiheadAttention) or cls in _TRANSFORMER_CLASSES:
            raise ValueError(
                f"{type(model).__name__} is a vision transformer ({cls}); F-CAM's U-Net decoder "
                "needs a convolutional feature pyramid with several strides, which ViT (one "
                "token grid) and Swin (channels-last stages) do not provide. Use a CAM extractor "
                "from fcam.cams with a reshape of the tokens instead."
            )


def _level(shape: torch.Size, size: tuple[int, int]) -> int | None:
    if len(shape) != 4 or shape[-1] < 1 or shape[-2] < 1:
        return None
    rh = math.log2(size[0] / shape[-2])
    rw = math.log2(size[1] / shape[-1])
    lh, lw = round(rh), round(rw)
    if lh != lw or lh < 0 or abs(rh - lh) > 0.5 or abs(rw - lw) > 0.5:
        return None
    return lh


def _skips_hint(model: nn.Module) -> str:
    tops = [n for n, _ in model.named_children()][:6]
    return (
        "pass the skip layers explicitly, e.g. FCAM(model, target_layer=..., "
        f"skips=[...]) with module names from model.named_modules() such as {tops}"
    )


def discover_pyramid(
    model: nn.Module,
    target_layer: nn.Module | str,
    skips: Sequence[nn.Module | str] | None = None,
    *,
    in_channels: int = 3,
    probe_size: tuple[int, int] = PROBE_SIZE,
    probe: ModelProbe | None = None,
) -> Pyramid:
    """Find the head and skip features of ``model`` (rule in the module docstring).

    Args:
        model: the classifier (any ``nn.Module`` taking ``(N, in_channels, H, W)`` images).
        target_layer: the CAM layer (module or dotted name); its output is the head.
        skips: optional explicit skip layers (modules or names), any order; overrides discovery.
        in_channels: image channels of the probe input.
        probe_size: ``(H, W)`` of the probe input.
        probe: a :func:`fcam.core.layers.probe_model` result to reuse instead of running a new
            probe forward (``in_channels`` and ``probe_size`` are then ignored).

    Returns:
        The :class:`Pyramid`.

    Raises:
        ValueError: for transformers, a target whose output is not a spatial map, explicit skips
            that are not spatial maps shallower than the head (or share a stride), or a model
            without any usable skip feature (the message says how to pass ``skips=``).

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18(weights=None)
        >>> p = discover_pyramid(m, "layer4")
        >>> [s.name for s in p.skips]
        ['layer3', 'layer2', 'layer1', 'relu']
    """
    _refuse_transformers(model)
    target = module_name(model, target_layer)
    if probe is None:
        probe = probe_model(model, size=probe_size, in_channels=in_channels)
    probe_size = probe.size
    events = probe.events
    by_name = {e.name: e for e in events}
    if target not in by_name:
        raise ValueError(f"target_layer {target!r} did not run during a forward pass of the model")
    t_ev = by_name[target]
    t_level = _level(t_ev.shape, probe_size) if t_ev.shape is not None else None
    if t_ev.shape is None or t_level is None or t_level < 1:
        raise ValueError(
            f"target_layer {target!r} must output a spatial map (N, C, h, w) smaller than the "
            f"input; got {None if t_ev.shape is None else tuple(t_ev.shape)} for a probe input "
            f"of {probe_size}"
        )
    head = FeatureLevel(target, int(t_ev.shape[1]), t_level)

    found: dict[int, FeatureLevel] = {}
    if skips is not None:
        for layer in skips:
            name = module_name(model, layer)
            ev = by_name.get(name)
            lvl = _level(ev.shape, probe_size) if ev is not None and ev.shape is not None else None
            if ev is None or lvl is None or not 1 <= lvl < t_level:
                raise ValueError(
                    f"skips: layer {name!r} must output a spatial map with a stride between 2 "
                    f"and the head's stride {2**t_level} (exclusive); got "
                    f"{None if ev is None or ev.shape is None else tuple(ev.shape)} for a probe "
                    f"input of {probe_size}"
                )
            if lvl in found:
                raise ValueError(
                    f"skips: {found[lvl].name!r} and {name!r} have the same stride {2**lvl}; "
                    "pass at most one layer per stride"
                )
            found[lvl] = FeatureLevel(name, int(ev.shape[1]), lvl)  # type: ignore[index]
    else:
        best: dict[int, tuple[int, int, str, int]] = {}  # level -> (depth, -order, name, ch)
        for ev in events:
            if ev.order >= t_ev.order or ev.name == target or ev.name == "" or ev.shape is None:
                continue
            lvl = _level(ev.shape, probe_size)
            if lvl is None or not 1 <= lvl < t_level:
                continue
            key = (ev.name.count("."), -ev.order, ev.name, int(ev.shape[1]))
            if lvl not in best or key < best[lvl]:
                best[lvl] = key
        found = {lvl: FeatureLevel(k[2], k[3], lvl) for lvl, k in best.items()}
        if not found:
            raise ValueError(
                f"no skip features found in {type(model).__name__} before target_layer "
                f"{target!r} (no module outputs a map with stride between 2 and "
                f"{2 ** t_level}); {_skips_hint(model)}"
            )
    pyr = Pyramid(head, tuple(found.get(lvl) for lvl in range(t_level - 1, 0, -1)))
    logger.info(
        "feature pyramid of %s: head %s (stride %d), skips %s",
        type(model).__name__,
        target,
        2**t_level,
        [(s.name, 2**s.level) if s else None for s in pyr.skips],
    )
    return pyr
