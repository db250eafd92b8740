"""The user cache directory and the hash keys of cached trained weights.

The cache lives in ``$FCAM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fcam``, else
``~/.cache/fcam``. Entries are keyed by a hash of the configuration that produced them, so a
changed configuration never reuses stale weights, and are written atomically through
:mod:`fcam.core.io` so an interrupted run never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "config_key"]


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
