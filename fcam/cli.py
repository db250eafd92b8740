"""The ``fcam`` command line.

Sub-commands (implemented in :mod:`fcam.commands`, one module each):

* ``fcam demo``: synthetic data, a ResNet-18 trained from scratch, F-CAM fitted on two seed
  CAMs, and the WSOL metrics of interpolated CAM versus F-CAM (see :mod:`fcam.demo.pipeline`);
* ``fcam fit``: train F-CAM for any classifier from an image folder (``ImageFolder`` or
  wsolevaluation layout), with per-epoch checkpoints and ``--resume``;
* ``fcam evaluate``: PxAP / MaxBoxAccV2 / MaxBoxAcc / top-1 loc of an interpolated CAM or of
  a fitted F-CAM checkpoint on a dataset in the wsolevaluation layout;
* ``fcam explain``: overlays of F-CAM (or CAM) maps on image files;
* ``fcam export``: maps of a whole dataset as ``.npy``/``.png`` files, resumable;
* ``fcam app``: a local web page with CAMs and F-CAM side by side (``fcam[app]`` extra).

The classifier is ``--classifier FILE`` (an fcam classifier file) or ``--model NAME`` (a
torchvision builder name or ``package.module:callable``) with ``--weights FILE``.

User errors (bad arguments, missing or unreadable files, weights that do not fit) end with
exit status 2 and one line ``fcam: error: ...`` on stderr. Anything else is an internal error:
exit status 1, one line, and the traceback with ``-v``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from fcam import __version__
from fcam.commands import app, demo, evaluate, explain, export, fit
from fcam.commands.common import Parser, UserError

__all__ = ["UserError", "build_parser", "main"]

logger = logging.getLogger(__name__)

_EPILOG = """\
examples:
  fcam demo --quick                       # a few minutes on a laptop CPU
  fcam fit --data-root data/train --model resnet50 --weights cub_resnet50.pth \\
      --num-classes 200 --target-layer layer4 --out fcam-cub.pt
  fcam evaluate --data-root dataset/CUB --metadata metadata/CUB/test \\
      --model resnet50 --weights cub_resnet50.pth --checkpoint fcam-cub.pt
  fcam explain bird.jpg --classifier fcam-demo/classifier.pt \\
      --checkpoint fcam-demo/fcam-gradcampp.pt --out overlays/
  fcam export --data-root data/test --classifier fcam-demo/classifier.pt \\
      --cam gradcampp --format npy,png --out maps/
  fcam app --classifier fcam-demo/classifier.pt --checkpoint fcam-demo/fcam-gradcampp.pt
"""

_COMMANDS = (demo, fit, evaluate, explain, export, app)


def build_parser() -> argparse.ArgumentParser:
    """The ``fcam`` argument parser with every sub-command."""
    parser = Parser(
        prog="fcam",
        description="F-CAM: full-resolution class activation maps for PyTorch classifiers.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fcam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in _COMMANDS:
        command.register(sub)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _sizes(args: argparse.Namespace | None) -> str:
    """The options that set how much memory a run takes, as the user gave them."""
    parts = [
        f"{flag} {getattr(args, attr)}"
        for flag, attr in (("--size", "size"), ("--image-size", "image_size"), ("--batch-size", "batch_size"))
        if getattr(args, attr, None) is not None
    ]
    return f"(with {', '.join(parts)})" if parts else "(with the input sizes given)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fcam`` console script; returns the exit status.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        fcam 0.1.0
    """
    parser = build_parser()
    verbose = 0
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stdout)
            return 0
        verbose = int(args.verbose)
        _configure_logging(verbose)
        return int(args.func(args))
    except UserError as exc:
        print(f"fcam: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fcam: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"fcam: error: out of memory {_sizes(args)}; lower them", file=sys.stderr)
        return 2
    except OSError as exc:  # the user's files or disk: unreadable, unwritable, full
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"fcam: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug or an unexpected failure
        if type(exc).__name__ == "OutOfMemoryError":  # torch's CUDA/MPS OOM, without importing torch
            print(f"fcam: error: device out of memory {_sizes(args)}; lower them", file=sys.stderr)
            return 2
        if verbose:
            traceback.print_exc(file=sys.stderr)
        hint = "" if verbose else " (run with -v for the traceback)"
        print(f"fcam: internal error: {type(exc).__name__}: {_one_line(exc)}{hint}", file=sys.stderr)
        return 1
