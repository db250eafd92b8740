"""Atomic file writes: readers never see a partial file, and files get the usual permissions.

Every writer goes through :func:`atomic_write_bytes`: the data is written to a temporary file
in the target folder, flushed and ``fsync``-ed, given the mode a plain ``open()`` would have
given it (``0o666`` minus the process umask; :func:`tempfile.mkstemp` alone creates ``0o600``
files that nobody else can read), then moved over the target with :func:`os.replace`.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_png",
    "atomic_write_text",
    "default_file_mode",
    "read_torch_file",
]

_UMASK_LOCK = threading.Lock()


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` minus the umask.

    Example:
        >>> old = os.umask(0o022); mode = default_file_mode(); _ = os.umask(old)
        >>> oct(mode)
        '0o644'
    """
    # os.umask can only be read by setting it; the lock keeps two threads from racing on it.
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating missing parent folders.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a" / "b.txt"
        >>> atomic_write_bytes(target, b"hi").read_bytes()
        b'hi'

    Args:
        path: the destination file.
        data: its full content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; see :func:`atomic_write_bytes`."""
    import torch  # deferred: `fcam --version` and the torch-free demo config import this module

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_write_png(path: str | os.PathLike[str], pixels: Any) -> Path:
    """Encode an ``(H, W)`` or ``(H, W, 3)`` uint8 array as PNG and write it atomically.

    Example:
        >>> import tempfile, numpy as np
        >>> target = Path(tempfile.mkdtemp()) / "x.png"
        >>> atomic_write_png(target, np.zeros((2, 3, 3), dtype=np.uint8)).read_bytes()[:4]
        b'\\x89PNG'
    """
    from PIL import Image  # deferred: keeps `import fcam.core` light

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: loading never runs code.

    Failures become a ``ValueError`` whose message says what the file is instead (not a
    PyTorch file at all, pickled objects that safe loading refuses, or a damaged archive), in
    place of torch's advice to retry with ``weights_only=False``.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "x.png"
        >>> _ = target.write_bytes(b"\\x89PNG....")
        >>> read_torch_file(target)
        Traceback (most recent call last):
        ...
        ValueError: not a PyTorch file (torch.save writes a zip archive; this file starts with b'\\x89PNG')
    """
    import pickle

    import torch

    with open(path, "rb") as handle:
        head = handle.read(4)
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):
        raise ValueError(
            f"not a PyTorch file (torch.save writes a zip archive; this file starts with {head!r})"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        reason = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if text else ""
        raise ValueError(
            "it holds Python objects that safe loading (weights_only=True) refuses"
            f"{': ' + reason if reason else ''}; save plain tensors or a state_dict instead"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types on damaged archives
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"damaged or unreadable PyTorch file: {first}") from None
