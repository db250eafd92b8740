"""``build``: any CNN classifier turned into a WSOL model with the method's heads and CAM rule.

The backbone is a copy of the given model run up to its *feature layer* (the last layer with a
spatial output, adaptive poolings excluded, or the layer you name): the copy's forward stops
there, so the original classifier head never runs. On the features sit the method's heads:

======================  ===========================================================  ================================
method                  heads (new parameters, 10× learning rate in :func:`train`)   CAM (``.cams``)
======================  ===========================================================  ================================
``cam``, ``has``,       global average pooling + linear                              :math:`\\frac1C\\sum_k w_{ck} A_k`
``cutmix``, ``adl``
``acol``                two heads conv3×3-1024, conv3×3-1024, conv1×1-C (A, B)       max of the normalised A and B maps
``spg``                 conv1×1-C class map + branches B1, B2, C (:class:`SPGHeads`)  the class map
``eil``, ``meil``       global average pooling + linear; erased copies in training   :math:`\\frac1C\\sum_k w_{ck} A_k`
                        (:mod:`fcam.wsol.eil`)
``danet``               ``k`` maps per class per level (:class:`DANetHeads`)          sum of the levels' mean maps
``spol``                two MFF heads on the last three stages, the second on its    the segmentation net's sigmoid
                        own copy of the classifier (:mod:`fcam.wsol.spol`)
``cstn``                conv spatial transformer on the stride-16 stage              windows weighted by p(i, j | c)
                        (:mod:`fcam.wsol.cstn`)
======================  ===========================================================  ================================

ADL layers (``adl``) follow the last two stages: the feature layer and the last module of the
stride before it (:func:`fcam.upscalers.discover_pyramid`'s deepest skip), or the layers named
in ``adl_layers``. SPG's branch B1 reads that same earlier stage. EIL erases the input of the last stage and MEIL
the inputs of the last two (``levels``, :func:`fcam.wsol.eil.default_erase_levels`); DANet's
parent and root heads read the two stages before the feature layer.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fcam.core.layers import first_conv_channels, probe_structure, resolve_layer
from fcam.core.state import frozen
from fcam.core.targets import Targets, parse_targets
from fcam.core.validation import check_images, check_int
from fcam.upscalers import discover_pyramid
from fcam.wsol.acol import AcolHeads
from fcam.wsol.adl import ADL
from fcam.wsol.augment import check_probability
from fcam.wsol.danet import DANetHeads, check_hierarchy
from fcam.wsol.eil import default_erase_levels, erasing
from fcam.wsol.spg import SPGHeads

__all__ = ["METHODS", "WSOLModel", "available", "build"]

logger = logging.getLogger(__name__)

#: The WSOL methods, in the order of :func:`available`.
METHODS: tuple[str, ...] = (
    "cam", "has", "cutmix", "adl", "acol", "spg", "eil", "meil", "danet", "spol", "cstn",
)
_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def available() -> list[str]:
    """The WSOL methods accepted by :func:`build` and :func:`train`.

    Example:
        >>> available()
        ['cam', 'has', 'cutmix', 'adl', 'acol', 'spg', 'eil', 'meil', 'danet', 'spol', 'cstn']
    """
    return list(METHODS)


def check_method(method: object) -> str:
    """Return the lower-case method name or raise a ``ValueError`` naming ``method``."""
    if not isinstance(method, str):
        raise TypeError(f"`method` must be a string, got {type(method).__name__}")
    key = method.lower()
    if key not in METHODS:
        raise ValueError(f"unknown WSOL `method` {method!r}; available: {available()}")
    return key


class _Stop(Exception):
    """Raised by the hook on the feature layer to end the backbone's forward there."""


def _feature_layer(model: nn.Module, probe: Any) -> str:
    """The last module with a spatial output that is not an adaptive pooling."""
    modules = dict(model.named_modules())
    for event in reversed(probe.events):
        shape = event.shape
        if not event.name or shape is None or len(shape) != 4 or shape[-2] * shape[-1] <= 1:
            continue
        if not isinstance(modules[event.name], _ADAPTIVE_POOLS):
            return str(event.name)
    raise ValueError("no layer of `model` outputs a spatial map; pass feature_layer=")


class WSOLModel(nn.Module):
    """A backbone cut at its feature layer plus one WSOL method's heads.

    ``forward(images)`` returns logits; :meth:`forward_train` returns every output the method's
    loss needs; :meth:`cams` returns the method's own low-resolution maps. Build it with
    :func:`build`.

    Attributes:
        method: the WSOL method.
        backbone: the (copied) classifier; only its modules up to ``feature_layer`` run.
        feature_layer: dotted name of the feature layer inside ``backbone``.
        early_layer: the last module of the stride before (ADL and SPG's B1 read it).
        target_layer: ``"backbone.<feature_layer>"``, the layer to give :class:`fcam.FCAM`.
        adl: the ADL modules (``adl`` only), applied after ``adl_layers``.
        heads: the method's new modules (see the module docstring).
        taps: the stages read besides the feature layer: EIL/MEIL's erased levels (in forward
            order), DANet's parent and root stages.
        erase_threshold: EIL/MEIL's :math:`\\gamma`.
    """

    def __init__(self, backbone: nn.Module, method: str, feature_layer: str, early_layer: str,
                 heads: nn.Module, adl_layers: Sequence[str] = (),
                 adl_options: dict[str, float] | None = None, taps: Sequence[str] = (),
                 erase_threshold: float = 0.7) -> None:
        super().__init__()
        self.method = method
        self.backbone = backbone
        self.feature_layer = feature_layer
        self.early_layer = early_layer
        self.target_layer = f"backbone.{feature_layer}"
        self.adl_layers = list(adl_layers)
        self.adl = nn.ModuleList(ADL(**(adl_options or {})) for _ in self.adl_layers)
        self.heads: Any = heads  # AcolHeads, SPGHeads, DANetHeads or an nn.Sequential head
        self.taps = list(taps)
        self.erase_threshold = erase_threshold

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters created by :func:`build` (trained at 10× the learning rate)."""
        return list(self.heads.parameters())

    def features(self, images: Tensor, early: bool = False) -> tuple[Tensor, Tensor | None]:
        """Backbone features at the feature layer (and at ``early_layer`` when asked)."""
        captured = self.tapped(images, [self.early_layer] if early else [])
        return captured["features"], captured.get(self.early_layer)

    def tapped(self, images: Tensor, taps: Sequence[str] = (), erase: bool = False) -> dict[str, Tensor]:
        """``{"features": ..., <tap>: ...}``: the feature layer's and the ``taps``' outputs;
        ``erase=True`` (EIL, MEIL) appends the erased copies at ``self.taps``."""
        modules = dict(self.backbone.named_modules())
        captured: dict[str, Tensor] = {}
        handles = []
        for layer, adl in zip(self.adl_layers, self.adl):
            if adl.training:  # ADL is the identity in eval mode: no hook at all
                handles.append(modules[layer].register_forward_hook(
                    lambda _m, _i, out, adl=adl: adl(out)))
        for tap in taps:
            handles.append(modules[tap].register_forward_hook(
                lambda _m, _i, out, tap=tap: captured.__setitem__(tap, out)))

        def stop(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            captured["features"] = output
            raise _Stop

        handles.append(modules[self.feature_layer].register_forward_hook(stop))
        layers = self.taps if erase else []
        try:
            with erasing(self.backbone, layers, images.shape[0], self.erase_threshold):
                self.backbone(images)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if "features" not in captured:
            raise RuntimeError(f"feature layer {self.feature_layer!r} did not run in the forward")
        return captured

    def forward_train(self, images: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """Every output of the method: ``logits`` plus ``logits_b``/``map_a``/``map_b`` (ACoL),
        ``class_map``/``logits_b1``/``logits_b2``/``logits_c`` (SPG), ``logits_erased`` (EIL,
        MEIL: the erased copies' logits, level after level), ``logits_<l>``/``gt_maps`` (DANet)."""
        if self.method in ("eil", "meil"):
            logits = self.heads(self.tapped(images, erase=True)["features"])
            return {"logits": logits[:images.shape[0]], "logits_erased": logits[images.shape[0]:]}
        if self.method == "danet":
            return self.heads(self._danet_feats(images), labels)
        feats, early = self.features(images, early=self.method == "spg")
        if self.method == "acol":
            return self.heads(feats, labels, branch_b=True)
        if self.method == "spg":
            return self.heads(feats, early)
        return {"logits": self.heads(feats), "features": feats}

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``(B, K)``."""
        if self.method == "danet":
            return self.heads(self._danet_feats(images))["logits"]
        feats, _ = self.features(images)
        if self.method == "acol":
            return self.heads(feats, branch_b=False)["logits"]
        if self.method == "spg":
            return self.heads(feats)["logits"]
        return self.heads(feats)

    @torch.no_grad()
    def cams(self, images: Tensor, targets: Targets = None) -> Tensor:
        """The method's own ``(B, h, w)`` maps at the feature resolution (eval mode, no grad).

        ``targets=None`` uses the predicted class. Bring them to the input size with
        :func:`fcam.cams.cam_to_size`; pass this method as ``cam=`` to :class:`fcam.FCAM`.
        """
        check_images(images)
        with frozen(self, requires_grad=True):
            if self.method == "danet":
                feats_l = self._danet_feats(images)
                wanted_l = None if targets is None else self._targets(targets, images, lambda: None)
                return self.heads.cams(feats_l, wanted_l).float()
            feats, _ = self.features(images)
            rows = torch.arange(images.shape[0], device=images.device)
            if self.method == "acol":
                wanted = self._targets(targets, images, lambda: self.heads(feats, branch_b=False)["logits"])
                return self.heads.cams(feats, wanted).float()
            if self.method == "spg":
                class_map = self.heads(feats)["class_map"]
                wanted = self._targets(targets, images, lambda: class_map.mean(dim=(-2, -1)))
                return class_map[rows, wanted].float()
            fc = self.heads[-1]
            wanted = self._targets(targets, images, lambda: self.heads(feats))
            weights = fc.weight[wanted][:, :, None, None]
            return (weights * feats).mean(dim=1).float()

    def _danet_feats(self, images: Tensor) -> list[Tensor]:
        captured = self.tapped(images, self.taps)
        return [captured["features"]] + [captured[tap] for tap in self.taps]

    def _targets(self, targets: Targets, images: Tensor, logits: Any) -> Tensor:
        num_classes = int(self.num_classes)
        parsed = parse_targets(targets, images.shape[0], num_classes)
        return logits().argmax(1) if parsed is None else parsed.to(images.device)

    @property
    def num_classes(self) -> int:
        """Number of classes of the heads."""
        if self.method == "acol":
            return int(self.heads.head_a[-1].out_channels)
        if self.method == "spg":
            return int(self.heads.class_map.out_channels)
        if self.method == "danet":
            return int(self.heads.num_classes)
        return int(self.heads[-1].out_features)


def build(
    model: nn.Module,
    method: str,
    num_classes: int,
    *,
    feature_layer: nn.Module | str | None = None,
    input_size: tuple[int, int] | None = None,
    width: int = 1024,
    acol_threshold: float = 0.7,
    adl_drop_rate: float = 0.75,
    adl_drop_threshold: float = 0.9,
    adl_layers: Sequence[str] | None = None,
    erase_threshold: float = 0.7,
    levels: Sequence[nn.Module | str] | None = None,
    k: int = 8,
    hierarchy: Sequence[Sequence[int]] | None = None,
    seed: int = 0,
    **method_options: Any,
) -> WSOLModel:
    """Turn a CNN classifier into a WSOL model for ``method`` (heads in the module docstring).

    The model is deep-copied (the original is never modified); the new heads are initialised
    from ``seed`` without touching the global RNG.

    Example:
        >>> net = torchvision.models.resnet18(weights=None)
        >>> built = build(net, "acol", num_classes=3, width=16)
        >>> built(torch.rand(2, 3, 64, 64)).shape, built.target_layer
        (torch.Size([2, 3]), 'backbone.layer4')
        >>> built.cams(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 2, 2])

    Args:
        model: any CNN classifier (torchvision or not).
        method: one of :func:`available`.
        num_classes: number of classes of the new heads.
        feature_layer: the layer whose output feeds the heads (module or dotted name of
            ``model``); default the last spatial layer that is not an adaptive pooling.
        input_size: ``(H, W)`` of the probe forward that measures the layers (default: the
            first size the model accepts, see :func:`fcam.core.probe_structure`).
        width: hidden width of ACoL's and SPG's heads (1024 in wsolevaluation).
        acol_threshold: ACoL's erasing threshold in ``[0, 1]``.
        adl_drop_rate, adl_drop_threshold: ADL's options in ``[0, 1]`` (0.75, 0.9).
        adl_layers: dotted names in ``model`` after which ADL runs (default: the last two
            stages).
        erase_threshold: EIL/MEIL's erasing threshold :math:`\\gamma` in ``[0, 1]`` (0.7).
        levels: EIL/MEIL's erased layers of ``model`` (default: the input of the last stage for
            ``eil``, of the last two for ``meil``).
        k: DANet's maps per class, at least 2 (8).
        hierarchy: DANet's per-level parent-index lists, class → parent → root (default none:
            DDA alone); see :func:`fcam.wsol.danet.check_hierarchy` and
            :func:`fcam.wsol.hierarchy_from_weights`.
        seed: seed of the new heads' initialisation.
        **method_options: options of one method's own builder: ``spol_width``,
            ``spol_dropout`` (:func:`fcam.wsol.spol.build_spol`); ``cstn_kernel``,
            ``cstn_grid`` (:func:`fcam.wsol.cstn.build_cstn`).

    Returns:
        The :class:`WSOLModel` (on the model's device, in training mode as the model was).

    Raises:
        TypeError, ValueError: unknown method, bad number, a model without spatial layers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    key = check_method(method)
    check_int(num_classes, "num_classes")
    check_int(width, "width")
    adl_options = {"drop_rate": adl_drop_rate, "drop_threshold": adl_drop_threshold}
    ADL(**adl_options)  # validates both options for every method
    AcolHeads(1, 1, 1, acol_threshold)  # validates the threshold
    check_probability(erase_threshold, "erase_threshold")
    check_int(k, "k", minimum=2)
    parents = check_hierarchy(hierarchy, num_classes) if key == "danet" else []
    probe = probe_structure(model, input_size, first_conv_channels(model))
    name = _feature_layer(model, probe) if feature_layer is None else resolve_layer(model, feature_layer)[0]
    pyramid = discover_pyramid(model, name, probe=probe)
    early = next((s for s in pyramid.skips if s is not None), None)
    if early is None:
        raise ValueError(f"`model` has no stage before feature layer {name!r}")
    channels, early_channels = pyramid.head.channels, early.channels
    if adl_layers is None:
        adl_layers = [early.name, name] if key == "adl" else []
    else:
        adl_layers = [resolve_layer(model, layer)[0] for layer in adl_layers] if key == "adl" else []
    taps = _taps(model, key, probe, pyramid, levels, len(parents))
    param = next(iter(model.parameters()), None)
    if method_options and key not in ("spol", "cstn"):
        raise TypeError(f"build({key!r}) got unexpected options {sorted(method_options)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if key in ("spol", "cstn"):
            return _build_own(model, key, num_classes, pyramid, feature_layer is None, width, param,
                              method_options)
        if key == "acol":
            heads: nn.Module = AcolHeads(channels, num_classes, width, acol_threshold)
        elif key == "spg":
            heads = SPGHeads(early_channels, channels, num_classes, width)
        elif key == "danet":
            sizes = [num_classes] + [max(level) + 1 for level in parents]
            tap_channels = [next(s.channels for s in pyramid.skips if s is not None and s.name == t) for t in taps]
            heads = DANetHeads([channels, *tap_channels], sizes, k, width, parents)
        else:
            heads = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, num_classes))
    if param is not None:
        heads.to(param.device, param.dtype)
    built = WSOLModel(copy.deepcopy(model), key, name, early.name, heads, adl_layers, adl_options,
                      taps, erase_threshold)
    built.train(model.training)
    logger.info("wsol.build: %s on %s (features %s, early stage %s)", key, type(model).__name__, name, early.name)
    return built


def _taps(model: nn.Module, key: str, probe: Any, pyramid: Any, levels: Sequence[nn.Module | str] | None,
          coarser: int) -> list[str]:
    """EIL/MEIL's erased layers (forward order) or DANet's parent/root stages (deepest first)."""
    if key == "danet":
        skips = [s.name for s in pyramid.skips if s is not None]
        if coarser > len(skips):
            raise ValueError(f"`hierarchy` has {coarser} levels but `model` has {len(skips)} stage(s) "
                             "before its feature layer")
        return skips[:coarser]
    if key not in ("eil", "meil"):
        return []
    if levels is None:
        return default_erase_levels(model, probe, pyramid, 1 if key == "eil" else 2)
    if isinstance(levels, (str, nn.Module)) or not levels:
        raise ValueError("`levels` must be a non-empty list of layers")
    names = [resolve_layer(model, layer)[0] for layer in levels]
    order = {e.name: e.order for e in probe.events}
    head = order[pyramid.head.name]
    bad = [n for n in names if n not in order or order[n] >= head]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"`levels` must be distinct layers that run before the feature layer "
                         f"{pyramid.head.name!r}, got {names}")
    return sorted(names, key=order.__getitem__)


def _build_own(model: nn.Module, key: str, num_classes: int, pyramid: Any, default_layer: bool,
               width: int, param: Tensor | None, options: dict[str, Any]) -> WSOLModel:
    """SPOL and CSTN, whose models subclass :class:`WSOLModel` in their own modules."""
    from fcam.wsol.cstn import build_cstn  # these modules import WSOLModel from here
    from fcam.wsol.spol import build_spol

    stages = [pyramid.head] + [s for s in pyramid.skips if s is not None]
    if key == "cstn" and default_layer:  # the paper's STN reads the stride-16 stage (layer3)
        stages = stages[next((i for i, s in enumerate(stages) if s.level <= 4), 1):]
    if len(stages) < (3 if key == "spol" else 2):
        raise ValueError(f"`model` has too few stages below {stages[0].name!r} for {key}")
    built: WSOLModel
    if key == "spol":
        layers = [s.name for s in stages[2::-1]]
        built = build_spol(model, num_classes, layers, [s.channels for s in stages[2::-1]], **options)
    else:
        built = build_cstn(model, num_classes, stages[0].name, stages[1].name, stages[0].channels,
                           width=width, **options)
    if param is not None:
        built.to(param.device, param.dtype)
    built.train(model.training)
    logger.info("wsol.build: %s on %s (stages %s)", key, type(model).__name__, [s.name for s in stages[:3]])
    return built
