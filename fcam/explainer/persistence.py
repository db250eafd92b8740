"""What :meth:`FCAM.save` writes and :meth:`FCAM.load` rebuilds (the file format itself is
:mod:`fcam.explainer.checkpoint`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from fcam.core.layers import OutputFn
from fcam.core.references import import_reference
from fcam.explainer.checkpoint import classifier_fingerprint, fingerprint_mismatch, read_checkpoint
from fcam.explainer.config import FCAMConfig
from fcam.upscalers import Pyramid

if TYPE_CHECKING:
    from fcam.explainer.fcam import FCAM

__all__ = ["check_compatible", "load", "payload"]

logger = logging.getLogger(__name__)


def payload(fc: FCAM) -> dict[str, Any]:
    """The checkpoint content of ``fc`` without training state."""
    return {
        "config": fc.config.to_dict(),
        "pyramid": fc.pyramid.to_dict(),
        "fingerprint": classifier_fingerprint(fc.model),
        "decoder": {k: v.detach().cpu() for k, v in fc.decoder.state_dict().items()},
        "history": fc.history,
    }


def check_compatible(fc: FCAM, content: Mapping[str, Any], path: Path | str) -> None:
    """Raise ``ValueError`` unless ``content`` was trained for ``fc``'s classifier and pyramid."""
    check_fingerprint(content, fc.model, path)
    if Pyramid.from_dict(content["pyramid"]) != fc.pyramid:
        raise ValueError(f"checkpoint {str(path)!r} uses another feature pyramid")


def check_fingerprint(content: Mapping[str, Any], model: nn.Module, path: Path | str) -> None:
    mismatch = fingerprint_mismatch(content["fingerprint"], model)
    if mismatch:
        raise ValueError(f"checkpoint {str(path)!r} was trained for another classifier: {mismatch}")


def load(
    cls: type[FCAM], path: str | os.PathLike[str], model: nn.Module, cam: Any,
    output_fn: OutputFn | None, overrides: Mapping[str, Any],
) -> FCAM:
    """The body of :meth:`FCAM.load`."""
    content = read_checkpoint(path)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_fingerprint(content, model, str(path))
    config = FCAMConfig.from_dict(content["config"]).replace(**overrides)
    if cam is None:
        cam = config.cam or _import_or_none(config.cam_ref, "cam")
    if output_fn is None:
        output_fn = _import_or_none(config.output_fn_ref, "output_fn")
    fc = cls(model, config.target_layer, cam, config.upscaler, skips=config.skips,
             output_fn=output_fn, config=config)
    fc.check_compatible(content, str(path))
    try:
        fc.decoder.load_state_dict(content["decoder"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {str(path)!r}: decoder weights do not fit: {exc}") from None
    fc.history = list(content.get("history", []))
    fc.fitted = True
    return fc


def _import_or_none(reference: str | None, what: str) -> Any:
    if reference is None:
        return None
    try:
        return import_reference(reference)
    except ValueError as exc:
        logger.warning("cannot restore the saved %s (%s); pass %s= to FCAM.load", what, exc, what)
        return None
