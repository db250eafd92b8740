"""What it takes to rebuild a classifier: :class:`ClassifierSpec` and :func:`build_model`.

A classifier is named in one of two ways:

* a **torchvision builder name** such as ``"resnet50"`` or ``"efficientnet_b0"``, built with
  ``torchvision.models.get_model(name, weights=None, num_classes=...)`` (never downloads);
* an **import path** ``"package.module:callable"`` (the callable may be a dotted attribute
  path, ``"pkg.mod:Class.factory"``) returning an ``nn.Module``; it is called with
  ``num_classes=`` when the spec has one, without arguments otherwise.

The spec also carries what the explanation needs besides the weights: the target layer, the
input size and the normalisation statistics.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from fcam.core import IMAGENET_MEAN, IMAGENET_STD, check_int, check_stats, import_reference

__all__ = ["ClassifierSpec", "build_model"]

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything besides the weights that rebuilds and explains a classifier.

    Example:
        >>> spec = ClassifierSpec("resnet18", num_classes=3, target_layer="layer4")
        >>> spec.is_import_path
        False
        >>> ClassifierSpec.from_dict(spec.to_dict()) == spec
        True

    Attributes:
        model: a torchvision builder name (``"resnet50"``) or ``"package.module:callable"``.
        num_classes: number of outputs passed to the builder (``None``: the builder's default).
        target_layer: dotted name of the CAM layer (``None``: found automatically).
        input_size: side of the square input in pixels (``None``: unknown, 224 is used).
        mean: per-channel normalisation mean of the inputs (ImageNet's by default).
        std: per-channel normalisation standard deviation.

    Raises:
        TypeError, ValueError: on a malformed field (the message names it).
    """

    model: str
    num_classes: int | None = None
    target_layer: str | None = None
    input_size: int | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise TypeError(f"model must be a non-empty name or import path, got {self.model!r}")
        if ":" in self.model and not _IMPORT_PATH.match(self.model):
            raise ValueError(
                f"model {self.model!r} is not an import path of the form 'package.module:callable'"
            )
        if self.num_classes is not None:
            check_int(self.num_classes, "num_classes")
        if self.target_layer is not None and (
            not isinstance(self.target_layer, str) or not self.target_layer
        ):
            raise TypeError(f"target_layer must be a dotted module name, got {self.target_layer!r}")
        if self.input_size is not None:
            check_int(self.input_size, "input_size")
        if isinstance(self.mean, (str, bytes)) or not isinstance(self.mean, Sequence):
            raise TypeError(f"mean must be a sequence of numbers, got {self.mean!r}")
        mean, std = check_stats(self.mean, self.std, channels=len(self.mean))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def is_import_path(self) -> bool:
        """Whether :attr:`model` is a ``package.module:callable`` import path."""
        return ":" in self.model

    @property
    def size(self) -> int:
        """:attr:`input_size`, or 224 when unknown."""
        return self.input_size or 224

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (loadable with ``torch.load(weights_only=True)``)."""
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassifierSpec:
        """Rebuild a spec from :meth:`to_dict`'s output (unknown keys are an error).

        Raises:
            TypeError: ``data`` is not a mapping.
            ValueError: unknown keys or a missing ``model``.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a classifier spec must be a mapping, got {type(data).__name__}")
        known = {"model", "num_classes", "target_layer", "input_size", "mean", "std"}
        unknown = sorted(set(data) - known)
        if unknown or "model" not in data:
            raise ValueError(f"bad classifier spec: unknown keys {unknown} or no 'model'")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def _import_callable(path: str) -> Any:
    try:
        obj = import_reference(path)
    except ValueError as exc:
        raise ValueError(f"model {path!r}: {exc}") from None
    if not callable(obj):
        raise TypeError(f"model {path!r} is not callable ({type(obj).__name__})")
    return obj


def _torchvision_model(name: str, num_classes: int | None) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"model {name!r} is neither a torchvision model name nor 'package.module:callable'"
            f"{hint}"
        )
    kwargs: dict[str, Any] = {"weights": None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return torchvision.models.get_model(name, **kwargs)


def build_model(spec: ClassifierSpec) -> nn.Module:
    """Build the (randomly initialised) classifier a spec names; no weights are downloaded.

    Example:
        >>> build_model(ClassifierSpec("resnet18", num_classes=3)).fc.out_features
        3

    Args:
        spec: the classifier's spec.

    Returns:
        The model, in training mode as built.

    Raises:
        TypeError: ``spec`` is not a :class:`ClassifierSpec`, or the callable does not return
            an ``nn.Module``.
        ValueError: unknown torchvision name or unimportable path.
    """
    if not isinstance(spec, ClassifierSpec):
        raise TypeError(f"spec must be a ClassifierSpec, got {type(spec).__name__}")
    if not spec.is_import_path:
        return _torchvision_model(spec.model, spec.num_classes)
    factory = _import_callable(spec.model)
    model = factory() if spec.num_classes is None else factory(num_classes=spec.num_classes)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {spec.model!r} returned {type(model).__name__}, not an nn.Module")
    return model
