"""The user cache directory and atomic, hash-keyed storage of trained weights.

The cache lives in ``$FCAM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fcam``, else
``~/.cache/fcam``. Entries are keyed by a hash of the configuration that produced them, so a
changed configuration never reuses stale weights, and are written atomically (temporary file
in the same directory, then :func:`os.replace`) so an interrupted run never leaves a truncated
checkpoint behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["atomic_torch_save", "cache_dir", "config_key"]

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """The fcam cache directory (not created)."""
    env = os.environ.get("FCAM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fcam"


def config_key(config: dict[str, Any]) -> str:
    """A stable hex digest of a JSON-serialisable configuration (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` through a temporary file and :func:`os.replace`."""
    import io

    import torch  # deferred: this module is imported by the torch-free demo config

    from fcam.data.wsol_writer import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    logger.debug("saved %s", path)
    return path
