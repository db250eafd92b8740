"""Finding layers, reading logits, and the probe forward that measures every layer once.

The probe forward runs the model once on a small input with a hook on every module and keeps
the last output shape of each, in execution order. Target-layer discovery, pyramid discovery
and the class count all read the same :class:`ModelProbe`, so building an explainer costs one
forward, not one per question.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fcam.core.state import frozen, model_device

__all__ = [
    "PROBE_SIZE",
    "LayerEvent",
    "ModelProbe",
    "OutputFn",
    "declared_input_size",
    "first_conv_channels",
    "locate_target_layer",
    "model_logits",
    "probe_model",
    "probe_structure",
    "resolve_layer",
]

OutputFn = Callable[[Any], Tensor]

#: Height and width of the default probe input. Non-square to reject channels-last tensors, and
#: large enough that unpadded architectures (inception_v3) keep clean power-of-two ratios.
PROBE_SIZE: tuple[int, int] = (320, 288)


def resolve_layer(model: nn.Module, target_layer: nn.Module | str) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for a layer given as a module or a dotted name.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> resolve_layer(net, "1")
        ('1', ReLU())

    Args:
        model: the model holding the layer.
        target_layer: a submodule of ``model`` or its dotted name (``"features.28"``).

    Returns:
        The layer's dotted name and the module itself.

    Raises:
        TypeError: if ``target_layer`` is neither a module nor a string.
        ValueError: if the layer is not part of ``model`` (the message lists close names).
    """
    if isinstance(target_layer, str):
        modules = dict(model.named_modules())
        if target_layer in modules and target_layer != "":
            return target_layer, modules[target_layer]
        names = [name for name in modules if name]
        close = difflib.get_close_matches(target_layer, names, n=5, cutoff=0.5)
        hint = f"; close names: {close}" if close else f"; e.g. {names[-5:]}"
        raise ValueError(f"`target_layer` {target_layer!r} is not a submodule of the model{hint}")
    if isinstance(target_layer, nn.Module):
        for name, module in model.named_modules():
            if module is target_layer and name:
                return name, module
        raise ValueError(
            f"`target_layer` ({type(target_layer).__name__}) is not a submodule of the model"
        )
    raise TypeError(
        f"`target_layer` must be an nn.Module or a dotted name, got {type(target_layer).__name__}"
    )


def model_logits(output: Any, output_fn: OutputFn | None = None) -> Tensor:
    """Extract ``(B, num_classes)`` logits from whatever a model returns.

    Handled without help: a tensor; an object with a ``logits`` attribute (torchvision's
    ``InceptionOutputs``/``GoogLeNetOutputs``, Hugging Face ``ModelOutput``); a dict with a
    ``"logits"`` or ``"out"`` key or a single tensor value; a tuple/list (first element).
    Anything else needs ``output_fn``.

    Example:
        >>> model_logits({"logits": torch.zeros(2, 10)}).shape
        torch.Size([2, 10])

    Args:
        output: the raw model output.
        output_fn: optional callable mapping ``output`` to logits; takes precedence.

    Returns:
        The logits tensor, shape ``(B, K)``.

    Raises:
        TypeError: if no logits tensor can be found.
        ValueError: if the logits are not 2-D.
    """
    if output_fn is not None:
        logits = output_fn(output)
    elif isinstance(output, Tensor):
        logits = output
    elif isinstance(getattr(output, "logits", None), Tensor):
        logits = output.logits
    elif isinstance(output, dict):
        logits = _dict_logits(output)
    elif isinstance(output, (tuple, list)) and output:
        logits = output[0]
    else:
        logits = output
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"cannot find logits in a model output of type {type(output).__name__}; pass `output_fn`"
        )
    if logits.ndim != 2:
        raise ValueError(
            f"logits must be (B, num_classes), got shape {tuple(logits.shape)}; pass `output_fn`"
        )
    return logits


def _dict_logits(output: dict[Any, Any]) -> Any:
    for key in ("logits", "out"):
        if key in output:
            return output[key]
    tensors = [value for value in output.values() if isinstance(value, Tensor)]
    return tensors[0] if len(tensors) == 1 else None


def first_conv_channels(model: nn.Module, default: int = 3) -> int:
    """Input channels of the first convolution of ``model`` (``default`` when there is none).

    Example:
        >>> first_conv_channels(nn.Sequential(nn.Conv2d(1, 4, 3)))
        1
    """
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    return default


@dataclass(frozen=True)
class LayerEvent:
    """The last call of one module during the probe.

    Attributes:
        order: position of that call's end in the forward (1 = first module to finish).
        name: qualified module name (``""`` is the model itself).
        shape: output shape, or ``None`` when the output is not a tensor.
    """

    order: int
    name: str
    shape: torch.Size | None


@dataclass(frozen=True)
class ModelProbe:
    """What one probe forward saw.

    Attributes:
        size: ``(H, W)`` of the probe input.
        events: the last call of every module, in the order those calls finished.
        output: the model's raw output.
    """

    size: tuple[int, int]
    events: tuple[LayerEvent, ...]
    output: Any

    def event(self, name: str) -> LayerEvent | None:
        """The event of module ``name``, or ``None`` if it did not run."""
        return next((e for e in self.events if e.name == name), None)

    def last_spatial(self) -> str:
        """Name of the last module whose output is a ``(B, C, h, w)`` map with ``h * w > 1``.

        Raises:
            ValueError: if no module outputs a spatial map.
        """
        for event in reversed(self.events):
            shape = event.shape
            if event.name and shape is not None and len(shape) == 4 and shape[-2] * shape[-1] > 1:
                return event.name
        raise ValueError(
            "no layer of the model outputs a 4-D spatial map; pass `target_layer` explicitly"
        )

    def num_classes(self, output_fn: OutputFn | None = None) -> int:
        """Number of classes of the model's logits."""
        return int(model_logits(self.output, output_fn).shape[1])


def probe_model(
    model: nn.Module,
    images: Tensor | None = None,
    *,
    size: tuple[int, int] = PROBE_SIZE,
    in_channels: int | None = None,
) -> ModelProbe:
    """Run one forward with a hook on every module and record each module's last output shape.

    The forward runs in eval mode under ``torch.no_grad()``; modes, flags and hooks are
    restored even on error.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Flatten(), nn.LazyLinear(2))
        >>> probe = probe_model(net, size=(9, 9))
        >>> [(e.name, tuple(e.shape)) for e in probe.events][:2]
        [('0', (1, 4, 4, 4)), ('1', (1, 64))]

    Args:
        model: the classifier.
        images: a representative batch (only its first image is used); default zeros.
        size: ``(H, W)`` of the zero input when ``images`` is ``None``.
        in_channels: channels of the zero input; default :func:`first_conv_channels`.

    Returns:
        The :class:`ModelProbe`.

    Raises:
        ValueError: if the model rejects the probe input (the message gives its shape).
    """
    if images is None:
        param = next(iter(model.parameters()), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        channels = first_conv_channels(model) if in_channels is None else in_channels
        images = torch.zeros(1, channels, *size, device=model_device(model), dtype=dtype)
    else:
        images = images[:1]
    last: dict[str, LayerEvent] = {}
    counter = [0]

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            counter[0] += 1
            shape = output.shape if isinstance(output, Tensor) else None
            last[name] = LayerEvent(counter[0], name, shape)

        return hook

    handles = [module.register_forward_hook(make_hook(name)) for name, module in model.named_modules()]
    try:
        with frozen(model, requires_grad=True), torch.no_grad():
            output = model(images)
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
        raise ValueError(
            f"the model rejected a probe input of shape {tuple(images.shape)}: {exc}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    events = tuple(sorted(last.values(), key=lambda e: e.order))
    return ModelProbe((int(images.shape[-2]), int(images.shape[-1])), events, output)


def declared_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The input size a model declares: torchvision's ``image_size`` or timm's
    ``pretrained_cfg["input_size"]`` / ``default_cfg["input_size"]``; ``None`` if none.

    Example:
        >>> net = nn.Linear(2, 2); net.image_size = 32
        >>> declared_input_size(net)
        (32, 32)
    """
    size: Any = getattr(model, "image_size", None)
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if size is None and isinstance(cfg, dict) and cfg.get("input_size"):
            size = tuple(cfg["input_size"])[-2:]
    if isinstance(size, int) and size > 0:
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return (int(size[0]), int(size[1]))
    return None


def probe_structure(
    model: nn.Module, input_size: tuple[int, int] | None = None, in_channels: int | None = None
) -> ModelProbe:
    """:func:`probe_model` at ``input_size``, or, when it is ``None``, at the first size the
    model accepts among :data:`PROBE_SIZE`, its :func:`declared_input_size` and 224×224.

    Example:
        >>> fixed = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 8 * 8, 2))
        >>> probe_structure(fixed, (8, 8)).size
        (8, 8)

    Raises:
        ValueError: the model rejects every tried size (the message says to pass
            ``input_size=``).
    """
    if input_size is not None:
        return probe_model(model, size=input_size, in_channels=in_channels)
    sizes = dict.fromkeys([PROBE_SIZE, declared_input_size(model) or PROBE_SIZE, (224, 224)])
    errors = []
    for size in sizes:
        try:
            return probe_model(model, size=size, in_channels=in_channels)
        except ValueError as exc:
            errors.append(f"{size[0]}x{size[1]}: {exc.__cause__ or exc}")
    raise ValueError(
        "the model rejects probe inputs of every tried size; pass input_size=(H, W), the size it "
        "was trained on. Tried " + "; ".join(errors)
    )


def locate_target_layer(model: nn.Module, images: Tensor) -> str:
    """Name of the last module (in execution order) whose output is a 4-D spatial map.

    "Spatial" means ``(B, C, h, w)`` with ``h * w > 1``, so global pooling outputs are
    skipped. One forward pass runs under ``torch.no_grad()`` in eval mode (:func:`probe_model`).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        >>> locate_target_layer(net, torch.zeros(1, 3, 8, 8))
        '1'

    Args:
        model: the classifier.
        images: a representative ``(B, C, H, W)`` input batch (only shapes matter).

    Returns:
        The dotted module name.

    Raises:
        ValueError: if no module produces a spatial map.
    """
    return probe_model(model, images).last_spatial()
