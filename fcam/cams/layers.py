"""Finding target layers and turning model outputs into logits.

These helpers are shared by every extractor and by :class:`fcam.FCAM`.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["locate_target_layer", "model_logits", "resolve_layer"]

logger = logging.getLogger(__name__)

OutputFn = Callable[[Any], Tensor]


def resolve_layer(model: nn.Module, target_layer: nn.Module | str) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for a layer given as a module or a dotted name.

    Example:
        >>> resolve_layer(torchvision.models.resnet18(), "layer4")[0]  # doctest: +SKIP
        'layer4'

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


def locate_target_layer(model: nn.Module, images: Tensor) -> str:
    """Name of the last module (in execution order) whose output is a 4-D spatial map.

    "Spatial" means ``(B, C, h, w)`` with ``h * w > 1``, so global pooling outputs are
    skipped. One forward pass runs under ``torch.no_grad()`` in eval mode; the model's
    mode is restored and all temporary hooks are removed, even on error.

    Example:
        >>> locate_target_layer(torchvision.models.resnet18(), torch.rand(1, 3, 64, 64))  # doctest: +SKIP
        'layer4'

    Args:
        model: the classifier.
        images: a representative ``(B, C, H, W)`` input batch (only shapes matter).

    Returns:
        The dotted module name.

    Raises:
        ValueError: if no module produces a spatial map.
    """
    found: list[str] = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor) and output.ndim == 4 and output.shape[-2] * output.shape[-1] > 1:
                found.append(name)

        return hook

    modes = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(make_hook(name)) for name, module in model.named_modules() if name]
    try:
        model.eval()
        with torch.no_grad():
            model(images[:1])
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    if not found:
        raise ValueError("no layer of the model outputs a 4-D spatial map; pass `target_layer` explicitly")
    return found[-1]


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
