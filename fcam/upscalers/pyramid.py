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

Token models (``docs/concepts/transformers.md``). Every output is classified by
:func:`fcam.core.tokens.output_layout`: ``"nchw"`` maps, channels-last ``"nhwc"`` maps (Swin
stages) and ``"tokens"`` sequences ``(N, T, C)`` with prefix tokens (ViT, DeiT). The layout is
recorded on each :class:`FeatureLevel` and :meth:`Pyramid.maps` converts the captured outputs
to ``(N, C, h, w)`` before the decoder, so hierarchical transformers (Swin, MaxViT) get the
rule above unchanged. A *plain* ViT has one token grid (every block at the patch stride
:math:`2^g`), so step 4 finds no skip; its pyramid is then built from the repeated blocks
(:func:`fcam.core.tokens.token_blocks`) as in DPT (Ranftl et al., 2021): the head (the CAM
layer, inside the last block) is assigned level :math:`g + 1` and the outputs of the blocks at
depths ``round(3D/4)``, ``round(D/2)``, ``round(D/4)`` levels
:math:`g, g - 1, g - 2`; those features keep ``grid_level = g`` and the decoder
(:class:`fcam.upscalers.DPTDecoder`, chosen automatically) resamples them with learned
convolutions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fcam.core.hooks import capture_features
from fcam.core.layers import PROBE_SIZE, ModelProbe, probe_model, resolve_layer
from fcam.core.tokens import LAYOUTS, GridLayout, output_layout, to_nchw, token_blocks

logger = logging.getLogger(__name__)

__all__ = ["FeatureLevel", "Pyramid", "capture_features", "discover_pyramid", "module_name"]


@dataclass(frozen=True)
class FeatureLevel:
    """One feature of the pyramid.

    Attributes:
        name: qualified module name in ``model.named_modules()``.
        channels: number of channels of the module output.
        level: :math:`\\log_2` of the stride the decoder reads it at (``3`` for stride 8).
        layout: how the module outputs it: ``"nchw"``, channels-last ``"nhwc"`` (Swin) or
            ``"tokens"`` ``(N, T, C)`` (ViT); see :func:`fcam.core.tokens.output_layout`.
        prefix: leading non-patch tokens to drop (``"tokens"`` only).
        grid_level: :math:`\\log_2` of the module's own stride when the decoder resamples it to
            ``level`` (the blocks of a plain ViT); ``None`` when it is read as is.
    """

    name: str
    channels: int
    level: int
    layout: str = "nchw"
    prefix: int = 0
    grid_level: int | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")

    @property
    def source_level(self) -> int:
        """:math:`\\log_2` of the stride of the module output itself."""
        return self.level if self.grid_level is None else self.grid_level

    def to_map(self, output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The module output as an ``(N, C, h, w)`` map at its own stride, for an input of
        ``size`` (:func:`fcam.core.tokens.to_nchw`)."""
        return to_nchw(output, self.layout, size, self.prefix)

    def to_list(self) -> list[object]:
        """``[name, channels, level]``, plus ``layout, prefix, grid_level`` unless default."""
        base: list[object] = [self.name, self.channels, self.level]
        if self.layout == "nchw" and self.prefix == 0 and self.grid_level is None:
            return base
        return base + [self.layout, self.prefix, self.grid_level]

    @classmethod
    def from_list(cls, value: Sequence[Any]) -> FeatureLevel:
        """Inverse of :meth:`to_list` (3-element entries of older checkpoints included)."""
        if not 3 <= len(value) <= 6:
            raise ValueError(f"pyramid entry must have 3 to 6 elements, got {list(value)!r}")
        layout = str(value[3]) if len(value) > 3 else "nchw"
        prefix = int(value[4]) if len(value) > 4 else 0
        grid = None if len(value) < 6 or value[5] is None else int(value[5])
        return cls(str(value[0]), int(value[1]), int(value[2]), layout, prefix, grid)


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

    @property
    def resampled(self) -> bool:
        """Whether some feature is read at another stride than its own (a plain ViT)."""
        feats = [self.head, *self.skips]
        return any(f is not None and f.grid_level is not None for f in feats)

    def maps(
        self, feats: Mapping[str, torch.Tensor], size: tuple[int, int]
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """Captured outputs (by module name) -> ``(head, skips)`` as ``(N, C, h, w)`` maps.

        Each feature is converted from its recorded layout (channels-last maps permuted, token
        sequences stripped of their prefix tokens and folded into the grid of an input of
        ``size``); this is what F-CAM's decoders read.
        """
        head = self.head.to_map(feats[self.head.name], size)
        skips = [None if s is None else s.to_map(feats[s.name], size) for s in self.skips]
        return head, skips

    def to_dict(self) -> dict[str, object]:
        """Plain-python description (stored in checkpoints)."""

        def one(f: FeatureLevel | None) -> list[object] | None:
            return None if f is None else f.to_list()

        return {"head": one(self.head), "skips": [one(s) for s in self.skips]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pyramid:
        """Inverse of :meth:`to_dict`."""

        def one(v: Any) -> FeatureLevel | None:
            return None if v is None else FeatureLevel.from_list(v)

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


def _layout(shape: torch.Size | None, size: tuple[int, int]) -> GridLayout | None:
    return None if shape is None else output_layout(shape, size)


def _feature(name: str, shape: torch.Size, lay: GridLayout, level: int | None = None) -> FeatureLevel:
    channels = int(shape[1]) if lay.layout == "nchw" else int(shape[-1])
    if level is None or level == lay.level:
        return FeatureLevel(name, channels, lay.level, lay.layout, lay.prefix)
    return FeatureLevel(name, channels, level, lay.layout, lay.prefix, lay.level)


def _token_pyramid(
    model: nn.Module, probe: ModelProbe, head: FeatureLevel, head_order: int
) -> Pyramid | None:
    """The DPT-style pyramid of a plain ViT (module docstring), or ``None`` without blocks."""
    blocks = [b for b in token_blocks(model, probe) if probe.event(b).order < head_order]  # type: ignore[union-attr]
    if not blocks or head.level < 1:
        return None
    depth = len(blocks) + 1
    grid = head.level
    taps: dict[int, FeatureLevel] = {}
    for k, level in ((3, grid), (2, grid - 1), (1, grid - 2)):
        if level < 1:
            continue
        name = blocks[max(0, min(len(blocks) - 1, round(k * depth / 4) - 1))]
        ev = probe.event(name)
        lay = _layout(ev.shape, probe.size)  # type: ignore[union-attr]
        if lay is None:
            continue
        taps[level] = _feature(name, ev.shape, lay, level)  # type: ignore[union-attr,arg-type]
    top = FeatureLevel(head.name, head.channels, grid + 1, head.layout, head.prefix, grid)
    return Pyramid(top, tuple(taps.get(lvl) for lvl in range(grid, 0, -1)))


def _log(model: nn.Module, pyr: Pyramid) -> None:
    logger.info(
        "feature pyramid of %s: head %s (stride %d, %s), skips %s",
        type(model).__name__,
        pyr.head.name,
        2**pyr.head.level,
        pyr.head.layout,
        [(s.name, 2**s.level, s.layout) if s else None for s in pyr.skips],
    )


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
        ValueError: a target whose output is neither a map nor a token grid, explicit skips
            that are not spatial maps shallower than the head (or share a stride), or a model
            without any usable skip feature (the message says how to pass ``skips=``).

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18(weights=None)
        >>> p = discover_pyramid(m, "layer4")
        >>> [s.name for s in p.skips]
        ['layer3', 'layer2', 'layer1', 'relu']
    """
    target = module_name(model, target_layer)
    if probe is None:
        probe = probe_model(model, size=probe_size, in_channels=in_channels)
    probe_size = probe.size
    events = probe.events
    by_name = {e.name: e for e in events}
    if target not in by_name:
        raise ValueError(f"target_layer {target!r} did not run during a forward pass of the model")
    t_ev = by_name[target]
    t_lay = _layout(t_ev.shape, probe_size)
    if t_ev.shape is None or t_lay is None or t_lay.level < 1:
        raise ValueError(
            f"target_layer {target!r} must output a spatial map (N, C, h, w), a channels-last "
            "map (N, h, w, C) or a token grid (N, T, C) smaller than the input; got "
            f"{None if t_ev.shape is None else tuple(t_ev.shape)} for a probe input of {probe_size}"
        )
    head = _feature(target, t_ev.shape, t_lay)
    t_level = head.level

    found: dict[int, FeatureLevel] = {}
    if skips is not None:
        for layer in skips:
            name = module_name(model, layer)
            ev = by_name.get(name)
            lay = _layout(ev.shape, probe_size) if ev is not None else None
            if ev is None or ev.shape is None or lay is None or not 1 <= lay.level < t_level:
                raise ValueError(
                    f"skips: layer {name!r} must output a spatial map with a stride between 2 "
                    f"and the head's stride {2**t_level} (exclusive); got "
                    f"{None if ev is None or ev.shape is None else tuple(ev.shape)} for a probe "
                    f"input of {probe_size}"
                )
            if lay.level in found:
                raise ValueError(
                    f"skips: {found[lay.level].name!r} and {name!r} have the same stride "
                    f"{2**lay.level}; pass at most one layer per stride"
                )
            found[lay.level] = _feature(name, ev.shape, lay)
    else:
        # level -> (depth, layout rank, -order, name); nchw before nhwc before tokens.
        best: dict[int, tuple[int, int, int, str]] = {}
        feats: dict[str, FeatureLevel] = {}
        for ev in events:
            if ev.order >= t_ev.order or ev.name == target or ev.name == "" or ev.shape is None:
                continue
            lay = _layout(ev.shape, probe_size)
            if lay is None or not 1 <= lay.level < t_level:
                continue
            key = (ev.name.count("."), LAYOUTS.index(lay.layout), -ev.order, ev.name)
            if lay.level not in best or key < best[lay.level]:
                best[lay.level] = key
                feats[ev.name] = _feature(ev.name, ev.shape, lay)
        found = {lvl: feats[k[3]] for lvl, k in best.items()}
        if not found and head.layout == "tokens":
            token_pyr = _token_pyramid(model, probe, head, t_ev.order)
            if token_pyr is not None:
                _log(model, token_pyr)
                return token_pyr
        if not found:
            raise ValueError(
                f"no skip features found in {type(model).__name__} before target_layer "
                f"{target!r} (no module outputs a map with stride between 2 and "
                f"{2 ** t_level}); {_skips_hint(model)}"
            )
    pyr = Pyramid(head, tuple(found.get(lvl) for lvl in range(t_level - 1, 0, -1)))
    _log(model, pyr)
    return pyr
