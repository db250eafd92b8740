"""Shared pieces of the ``fcam`` commands: the user-error type, argument types, options, writers.

A :class:`UserError` is a mistake in the command line or in the user's files; the CLI reports
it in one line with exit status 2. Library calls that validate user-provided things run inside
:func:`user_input`, which turns their ``ValueError``/``TypeError``/``FileNotFoundError`` into a
:class:`UserError`; any other exception is an internal error (traceback with ``-v``).

Everything torch-related is imported inside functions so that ``fcam --help`` stays fast.
"""

from __future__ import annotations

import argparse
import io
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T", int, float)

MAP_FORMATS = ("npy", "png")


class UserError(Exception):
    """An error caused by the command line or the user's files: reported in one line."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`UserError` (one line, no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("fcam").strip()
        raise UserError(f"{where + ': ' if where else ''}{message} (see '{self.prog} --help')")


@contextmanager
def user_input(what: str = "") -> Iterator[None]:
    """Report ``ValueError``/``TypeError``/``FileNotFoundError`` raised in the block as a
    :class:`UserError` (prefixed with ``what``): the block validates something the user gave.

    Example:
        >>> with user_input("--model"):               # doctest: +SKIP
        ...     spec = ClassifierSpec(args.model)
    """
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"{what}: {message}" if what else message) from exc


# ------------------------------------------------------------------------ argument types
def number_type(
    cast: Callable[[str], T], accept: Callable[[T], bool], expected: str
) -> Callable[[str], T]:
    """An argparse ``type=`` that parses with ``cast`` and rejects values failing ``accept``."""

    def parse(text: str) -> T:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


#: Upper bounds of the numeric options: a typo such as ``--size 100000`` must be refused up
#: front, not end in an attempt to allocate tens of GB.
MAX_SIZE = 4096
MAX_COUNT = 1_000_000
MAX_SEED = 2**32 - 1


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type=`` for integers in ``[low, high]``."""
    return number_type(int, lambda v: low <= v <= high, f"an integer in [{low}, {high}]")


positive_int = bounded_int(1, MAX_COUNT)
size_int = bounded_int(1, MAX_SIZE)
non_negative_int = bounded_int(0, MAX_SEED)
positive_float = number_type(
    float, lambda v: math.isfinite(v) and 0 < v <= 1e6, "a positive number <= 1e6"
)
non_negative_float = number_type(
    float, lambda v: math.isfinite(v) and 0 <= v <= 1e6, "a number in [0, 1e6]"
)
unit_float = number_type(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def float_list(text: str) -> tuple[float, ...]:
    """Comma-separated finite floats, e.g. ``0.485,0.456,0.406``."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def cam_list(text: str) -> tuple[str, ...]:
    """Comma-separated names of :func:`fcam.cams.available`."""
    from fcam.cams import available

    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in available()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown CAM method(s) {', '.join(unknown) or repr(text)}; "
            f"choose from {','.join(available())}"
        )
    return names


def cam_name(text: str) -> str:
    """One name of :func:`fcam.cams.available`."""
    names = cam_list(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"expected one CAM method, got {text!r}")
    return names[0]


def map_formats(text: str) -> tuple[str, ...]:
    """Comma-separated output formats among ``npy`` and ``png``."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if not names or any(n not in MAP_FORMATS for n in names):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(MAP_FORMATS)}, got {text!r}"
        )
    return names


def device_type(text: str) -> str:
    """A torch device string that exists on this machine."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} requested but CUDA is not available")
    return text


def device_loading(model: Any) -> dict[str, Any]:
    """``DataLoader`` options for the classifier's device: pinned host memory on CUDA, so the
    batches' copies to the GPU (``non_blocking``) overlap the computation. On CUDA this also
    turns on cuDNN's autotuner: every command resizes its images to one ``--size``."""
    import torch

    from fcam.core import model_device

    if model_device(model).type != "cuda":
        return {}
    torch.backends.cudnn.benchmark = True
    return {"pin_memory": True}


# ------------------------------------------------------------------------------ options
def add_common(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--no-progress`` and ``-v``."""
    p.add_argument(
        "--device",
        type=device_type,
        default=None,
        help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more (-v: info, -vv: debug); internal errors show their traceback",
    )


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """``--data-root``, ``--metadata``, ``--mask-root``, ``--mask-dir`` (with ``--label``,
    ``--mask-threshold``), ``--batch-size``, ``--workers``."""
    p.add_argument(
        "--data-root",
        type=Path,
        required=True,
        metavar="DIR",
        help="image root: an ImageFolder (one sub-folder per class), with --metadata the "
        "image root of a wsolevaluation-layout split, with --mask-dir a folder of photographs",
    )
    p.add_argument(
        "--metadata",
        type=Path,
        default=None,
        metavar="DIR",
        help="the split's wsolevaluation metadata folder, e.g. metadata/CUB/test "
        "(image_ids.txt, class_labels.txt, image_sizes.txt, localization.txt)",
    )
    p.add_argument(
        "--mask-root", type=Path, default=None, help="root of mask paths (default: --data-root)"
    )
    add_mask_folder_args(p)
    p.add_argument(
        "--batch-size", type=size_int, default=32, metavar="N", help=f"default 32, at most {MAX_SIZE}"
    )
    p.add_argument(
        "--workers", type=bounded_int(0, 256), default=0, metavar="N", help="loader worker processes"
    )


def add_mask_folder_args(p: argparse.ArgumentParser, prefix: str = "", what: str = "") -> None:
    """``--mask-dir``, ``--label`` and ``--mask-threshold``: ``--data-root`` as a folder of
    photographs paired by file stem with figure/ground masks (:class:`fcam.data.MaskFolder`).

    ``prefix``/``what`` name a second pair (``--val-mask-dir`` ...) for ``what``.
    """
    p.add_argument(
        f"--{prefix}mask-dir", type=Path, default=None, metavar="DIR",
        help=f"{what}figure/ground masks paired by file stem (.jpg/.jpeg/.png) with the "
        f"photographs in --{prefix}data-root (white = object); instead of --metadata",
    )
    if prefix:
        return
    p.add_argument(
        "--label", type=bounded_int(0, MAX_COUNT), default=None, metavar="CLASS",
        help="with --mask-dir (and --val-mask-dir): the class of every photograph, e.g. 339 for "
        "horses in ImageNet (default: the classifier's prediction)",
    )
    p.add_argument(
        "--mask-threshold", type=bounded_int(0, 254), default=127, metavar="T",
        help="with --mask-dir: mask grey levels above T are the object (default 127)",
    )


def add_method_args(
    p: argparse.ArgumentParser, *, required: bool = True, exclusive: bool = True
) -> None:
    """``--checkpoint`` (a fitted F-CAM) or ``--cam`` (an interpolated CAM method); with
    ``exclusive=False`` both may be given (the command checks that one is)."""
    method = (p.add_mutually_exclusive_group(required=required) if exclusive
              else p.add_argument_group("map producers (one or both)"))
    method.add_argument(
        "--checkpoint", type=Path, metavar="FILE", help="fitted F-CAM (fcam fit / FCAM.save)"
    )
    method.add_argument(
        "--cam", type=cam_name, metavar="NAME", help="interpolated CAM method, e.g. gradcampp"
    )
    add_map_args(p, "with --checkpoint: ", "")


def add_map_args(p: argparse.ArgumentParser, before: str, after: str) -> None:
    """``--cam-mix`` and ``--cam-exponent`` (:attr:`fcam.explainer.FCAMConfig.cam_mix`,
    :attr:`~fcam.explainer.FCAMConfig.cam_exponent`), help framed by ``before`` and ``after``."""
    p.add_argument(
        "--cam-mix", type=unit_float, default=None, metavar="A",
        help=f"{before}F-CAM map = (1 - A) x decoder probability + A x seed CAM (default: fcam's "
        f"0.02, or the checkpoint's){after}",
    )
    p.add_argument(
        "--cam-exponent", type=non_negative_float, default=None, metavar="G",
        help=f"{before}also weight the decoder probability by seed CAM ** G (default: fcam's 0, "
        f"or the checkpoint's); --cam-mix 0 --cam-exponent 0 = the decoder's map alone, no "
        f"backward pass{after}",
    )


# ------------------------------------------------------------------------------ writers
def write_npy(path: Path, array: np.ndarray) -> Path:
    """``np.save`` an array to ``path`` atomically."""
    from fcam.core.io import atomic_write_bytes

    buffer = io.BytesIO()
    np.save(buffer, array)
    return atomic_write_bytes(path, buffer.getvalue())


def map_to_uint8(heat: Any) -> np.ndarray:
    """A ``(H, W)`` map in [0, 1] (tensor or array) as an 8-bit greyscale image."""
    array = np.asarray(heat.detach().cpu().numpy() if hasattr(heat, "detach") else heat)
    return np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def make_dir(path: Path, what: str) -> Path:
    """Create an output folder, reporting failures as a :class:`UserError`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{what}: cannot create {path}: {exc.strerror or exc}") from exc
    return path
