"""The checkpoint format of :class:`fcam.FCAM`: payload, version, classifier fingerprint.

A checkpoint is one ``torch.save`` dict, read back with ``torch.load(weights_only=True)``:

=============  ============================================================================
key            content
=============  ============================================================================
format         ``"fcam.FCAM"``
version        :data:`FORMAT_VERSION` (version-1 files, written before :class:`FCAMConfig`
               existed, hold the same config keys minus the new ones and still load)
config         :meth:`FCAMConfig.to_dict`
pyramid        :meth:`fcam.upscalers.Pyramid.to_dict`
fingerprint    :func:`classifier_fingerprint` of the classifier the decoder was trained on
decoder        the decoder's ``state_dict`` (CPU tensors)
history        one dict of mean losses per epoch
train          only in the per-epoch file of ``fit(checkpoint_dir=...)``: optimiser, scaler,
               loss, generator and global RNG states, for an exact resume
digest         :func:`payload_digest` of everything above: SHA-256 over every tensor's
               dtype, shape and bytes and over every other value's ``repr``, so flipped
               weight bytes are caught on load (a file without it loads with a warning)
=============  ============================================================================
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcam.core.io import atomic_torch_save, read_torch_file

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "classifier_fingerprint",
    "fingerprint_mismatch",
    "payload_digest",
    "read_checkpoint",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

#: File name of the per-epoch checkpoint inside ``checkpoint_dir``.
CHECKPOINT_NAME = "fcam-last.pt"
#: Value of the ``format`` key.
FORMAT = "fcam.FCAM"
#: Current version of the payload; :data:`READABLE_VERSIONS` can be read.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def classifier_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Architecture fingerprint: class name plus parameter and buffer names and shapes.

    Also holds a float checksum of the parameter values (a mismatch only warns: the decoder
    was trained on other weights of the same architecture).

    Example:
        >>> classifier_fingerprint(nn.Linear(2, 3))["params"]
        [['weight', [3, 2]], ['bias', [3]]]
    """
    with torch.no_grad():
        checksum = float(sum(p.detach().double().abs().sum().item() for p in model.parameters()))
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "params": [[n, list(p.shape)] for n, p in model.named_parameters()],
        "buffers": [[n, list(b.shape)] for n, b in model.named_buffers()],
        "checksum": checksum,
    }


def fingerprint_mismatch(saved: Mapping[str, Any], model: nn.Module) -> str | None:
    """Why ``model`` is not the classifier of ``saved``, or ``None`` when it is (weights may
    differ: that only logs a warning)."""
    now = classifier_fingerprint(model)
    if not _same_class(str(saved.get("class")), now["class"]):
        return f"architecture {now['class']} differs from the saved {saved.get('class')}"
    for key in ("params", "buffers"):
        old = [(n, tuple(s)) for n, s in saved.get(key, [])]
        new = [(n, tuple(s)) for n, s in now[key]]
        if old != new:
            diff = sorted(set(old) ^ set(new))[:3]
            return f"{key} differ (names/shapes), e.g. {diff}"
    if not math.isclose(float(saved.get("checksum", 0.0)), now["checksum"], rel_tol=1e-6):
        logger.warning(
            "the classifier has the saved architecture but other weights; the decoder was "
            "trained on different features"
        )
    return None


def _same_class(saved: str, now: str) -> bool:
    """Whether two ``module.qualname`` names are the same class. A class defined in a script is
    ``__main__.X`` there and ``module.X`` where the script is imported (a notebook that loads
    what the script fitted), so ``__main__`` matches any module with the same qualname; the
    parameter names and shapes are still compared after this."""
    if saved == now:
        return True
    main = "__main__."
    for one, other in ((saved, now), (now, saved)):
        if one.startswith(main) and other.endswith("." + one[len(main):]):
            return True
    return False


def _chunks(value: Any) -> Iterator[bytes]:
    """Deterministic byte stream of a nested payload (dict keys sorted by their repr)."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        yield f"T{flat.dtype}{tuple(value.shape)}".encode()
        yield flat.view(torch.uint8).numpy().tobytes()
    elif isinstance(value, Mapping):
        yield f"D{len(value)}".encode()
        for key in sorted(value, key=repr):
            yield repr(key).encode()
            yield from _chunks(value[key])
    elif isinstance(value, (list, tuple)):
        yield f"L{len(value)}".encode()
        for item in value:
            yield from _chunks(item)
    else:
        yield f"V{value!r}".encode()


def payload_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of a checkpoint payload, ignoring its ``digest`` entry.

    Example:
        >>> payload_digest({"w": torch.zeros(2)}) == payload_digest({"w": torch.zeros(2)})
        True
        >>> payload_digest({"w": torch.zeros(2)}) == payload_digest({"w": torch.ones(2)})
        False
    """
    sha = hashlib.sha256()
    for chunk in _chunks({k: v for k, v in payload.items() if k != "digest"}):
        sha.update(chunk)
    return sha.hexdigest()


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a checkpoint: format, version, required parts and digest.

    Raises:
        ValueError: missing, unreadable, foreign, newer-version, incomplete or damaged file
            (the path and the bad part are named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path {str(path)!r} is not a file")
    try:
        payload = read_torch_file(path)
    except ValueError as exc:
        raise ValueError(f"path {str(path)!r} is not a readable fcam checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"path {str(path)!r} is not an fcam.FCAM checkpoint")
    if payload.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"path {str(path)!r} has checkpoint version {payload.get('version')}; this fcam "
            f"reads versions {list(READABLE_VERSIONS)} (a newer file needs a newer fcam)"
        )
    for key, kind in (("config", dict), ("pyramid", dict), ("fingerprint", dict), ("decoder", dict)):
        if not isinstance(payload.get(key), kind):
            raise ValueError(
                f"path {str(path)!r} is a damaged fcam checkpoint: its {key!r} entry is "
                f"{'missing' if key not in payload else type(payload[key]).__name__}"
            )
    if "digest" not in payload:
        logger.warning("checkpoint %s has no digest: damage to its weights cannot be detected", path)
    elif payload["digest"] != payload_digest(payload):
        raise ValueError(
            f"path {str(path)!r} is damaged: its content does not match the SHA-256 digest "
            "stored when it was written"
        )
    return payload


def write_checkpoint(payload: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` with the current format, version and digest, atomically.

    Raises:
        ValueError: ``path`` is an existing folder or its folder does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path {str(path)!r} is a folder; give a file name such as 'fcam.pt'")
    if not path.parent.is_dir():
        raise ValueError(f"path: folder {str(path.parent)!r} does not exist")
    full = {**payload, "format": FORMAT, "version": FORMAT_VERSION}
    full["digest"] = payload_digest(full)
    return atomic_torch_save(full, path)
