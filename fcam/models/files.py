"""Saving and loading any classifier: weights files, checkpoints and fcam classifier files.

Three kinds of files are read, always with ``torch.load(weights_only=True)`` (no code runs):

* a **state dict** (``torch.save(model.state_dict(), path)``);
* a **training checkpoint** holding one under a common key (``"state_dict"``,
  ``"model_state_dict"``, ``"model"``, ``"net"``, ``"network"``, ``"weights"``);
* an **fcam classifier file** written by :func:`save_classifier`: the weights plus the
  :class:`~fcam.models.ClassifierSpec` (model name, classes, target layer, input size,
  normalisation), so :func:`load_classifier` needs nothing else. The classifier files of
  earlier fcam demos (``{"state_dict", "arch", "num_classes", "image_size"}``) load too.

A ``"module."`` prefix (``DistributedDataParallel``) or ``"_orig_mod."`` prefix
(``torch.compile``) on every key is stripped. Writes are atomic (:mod:`fcam.core.io`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fcam.core import atomic_torch_save
from fcam.core.io import read_torch_file
from fcam.models.spec import ClassifierSpec, build_model

__all__ = [
    "CHECKPOINT_KEYS",
    "FORMAT",
    "infer_num_classes",
    "load_classifier",
    "load_model",
    "load_weights",
    "read_classifier_file",
    "read_state_dict",
    "save_classifier",
]

logger = logging.getLogger(__name__)

#: The ``"format"`` tag of the files :func:`save_classifier` writes.
FORMAT = "fcam.classifier"
_VERSION = 1
#: Keys under which training checkpoints commonly keep the model's state dict, in search order.
CHECKPOINT_KEYS: tuple[str, ...] = (
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "network",
    "weights",
)
_PREFIXES = ("module.", "_orig_mod.")


def _torch_load(path: str | os.PathLike[str], what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return read_torch_file(path)
    except ValueError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = dict(state_dict)
    for prefix in _PREFIXES:
        if out and all(key.startswith(prefix) for key in out):
            out = {key[len(prefix) :]: value for key, value in out.items()}
    return out


def _extract_state_dict(payload: Any, path: Path) -> dict[str, Tensor]:
    if _is_state_dict(payload):
        return _strip_prefixes(payload)
    if isinstance(payload, Mapping):
        for key in CHECKPOINT_KEYS:
            if _is_state_dict(payload.get(key)):
                logger.info("%s: using the state dict under %r", path, key)
                return _strip_prefixes(payload[key])
        keys = sorted(map(str, payload))[:8]
        raise ValueError(
            f"{path} holds no state dict: not a dict of tensors, and none under the keys "
            f"{list(CHECKPOINT_KEYS)} (found keys {keys})"
        )
    raise ValueError(f"{path} holds a {type(payload).__name__}, not a state dict or checkpoint")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The model state dict in a weights file or training checkpoint (prefixes stripped).

    Example:
        >>> state = read_state_dict("resnet50_cub.pth")   # doctest: +SKIP

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, or no state dict in it.
    """
    path = Path(path)
    return _extract_state_dict(_torch_load(path, "weights file"), path)


def _legacy_spec(payload: Mapping[str, Any]) -> ClassifierSpec:
    """The spec of a classifier file written by the demo of fcam 0.1 (always a ResNet)."""
    size = payload.get("image_size")
    return ClassifierSpec(
        model=str(payload["arch"]),
        num_classes=int(payload["num_classes"]),
        target_layer="layer4",
        input_size=int(size) if size is not None else None,
    )


def read_classifier_file(
    path: str | os.PathLike[str],
) -> tuple[ClassifierSpec | None, dict[str, Tensor]]:
    """Read any classifier file: ``(spec or None, state dict)``.

    The spec comes from an fcam classifier file (:func:`save_classifier`, or a demo classifier
    file of an earlier fcam); plain state dicts and training checkpoints give ``None``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, malformed spec, or no state dict in it.
    """
    path = Path(path)
    payload = _torch_load(path, "classifier checkpoint")
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        if payload.get("version") != _VERSION:
            raise ValueError(f"{path}: classifier file version {payload.get('version')!r} unknown")
        try:
            spec = ClassifierSpec.from_dict(payload["spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed classifier spec: {exc}") from None
        return spec, _extract_state_dict(payload.get("state_dict"), path)
    if isinstance(payload, Mapping) and "arch" in payload and "state_dict" in payload:
        try:
            spec = _legacy_spec(payload)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed demo classifier file: {exc}") from None
        return spec, _extract_state_dict(payload["state_dict"], path)
    return None, _extract_state_dict(payload, path)


def infer_num_classes(state_dict: Mapping[str, Tensor]) -> int | None:
    """Output count of the last 2-D ``*.weight`` in the state dict (the classifier head of
    torchvision models), or ``None`` when there is none.

    Example:
        >>> infer_num_classes({"fc.weight": torch.zeros(7, 16), "fc.bias": torch.zeros(7)})
        7
    """
    heads = [v for k, v in state_dict.items() if k.endswith(".weight") and v.ndim == 2]
    return int(heads[-1].shape[0]) if heads else None


def load_weights(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "") -> nn.Module:
    """``model.load_state_dict(state_dict)`` (strict) with a one-line error on mismatch.

    Raises:
        ValueError: missing/unexpected keys or shape mismatches (the message summarises them).
    """
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())
        if len(detail) > 300:
            detail = detail[:297] + "..."
        where = f"{source}: " if source else ""
        raise ValueError(
            f"{where}weights do not fit {type(model).__name__}: {detail or exc}"
        ) from None
    return model


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(
    spec: ClassifierSpec,
    weights: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, ClassifierSpec]:
    """Build the classifier of ``spec`` and load a weights file or checkpoint into it.

    For a torchvision name without ``num_classes``, the class count is read from the weights
    (:func:`infer_num_classes`).

    Example:
        >>> model, spec = load_model(ClassifierSpec("resnet50"), "cub.pth")   # doctest: +SKIP

    Args:
        spec: the classifier's spec.
        weights: a state dict file or a checkpoint holding one; ``None`` keeps the weights the
            builder gives (random for torchvision names).
        device: where the model goes (``None``: CUDA when available).

    Returns:
        ``(model in eval mode on device, spec with num_classes filled in when inferred)``.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        TypeError, ValueError: a bad spec, file or mismatching weights.
    """
    if not isinstance(spec, ClassifierSpec):
        raise TypeError(f"spec must be a ClassifierSpec, got {type(spec).__name__}")
    state_dict = read_state_dict(weights) if weights is not None else None
    if state_dict is not None and spec.num_classes is None and not spec.is_import_path:
        inferred = infer_num_classes(state_dict)
        if inferred is not None:
            spec = dataclasses.replace(spec, num_classes=inferred)
    model = build_model(spec)
    if state_dict is not None:
        load_weights(model, state_dict, str(weights))
    elif not spec.is_import_path:
        logger.warning("model %r has random weights (no weights file given)", spec.model)
    return model.to(_device(device)).eval(), spec


def save_classifier(model: nn.Module, spec: ClassifierSpec, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s weights and ``spec`` to one file, atomically.

    The file holds plain values and tensors only (it loads with ``weights_only=True``).

    Example:
        >>> save_classifier(model, ClassifierSpec("resnet50", 200, "layer4", 224), "clf.pt")  # doctest: +SKIP

    Raises:
        TypeError: ``model`` is not a module or ``spec`` not a :class:`ClassifierSpec`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(spec, ClassifierSpec):
        raise TypeError(f"spec must be a ClassifierSpec, got {type(spec).__name__}")
    payload = {
        "format": FORMAT,
        "version": _VERSION,
        "spec": spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path = atomic_torch_save(payload, path)
    logger.debug("saved classifier %s", path)
    return Path(path)


def load_classifier(
    path: str | os.PathLike[str], *, device: str | torch.device | None = None
) -> tuple[nn.Module, ClassifierSpec]:
    """Rebuild a classifier saved with :func:`save_classifier` (or by an earlier fcam demo).

    Example:
        >>> model, spec = load_classifier("clf.pt")   # doctest: +SKIP

    Returns:
        ``(model in eval mode on device, spec)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a classifier file (plain weights need :func:`load_model` and a spec),
            or weights that do not fit.
    """
    spec, state_dict = read_classifier_file(path)
    if spec is None:
        raise ValueError(
            f"{path} holds weights without a model description; load it with "
            "load_model(ClassifierSpec(<model name>), path) (CLI: --model NAME --weights FILE)"
        )
    model = build_model(spec)
    load_weights(model, state_dict, str(path))
    return model.to(_device(device)).eval(), spec
