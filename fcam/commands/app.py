"""``fcam app``: the local web page of :mod:`fcam.app` (Gradio, the ``fcam[app]`` extra).

With no classifier option it opens on the demo's cached classifier and F-CAM checkpoint,
training them first when missing (:func:`_demo_models`, the one place besides the demo
command that imports :mod:`fcam.demo`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fcam.commands.common import UserError, add_common, bounded_int, user_input
from fcam.commands.sources import add_model_args, load_classifier_args

_MODEL_OPTIONS = ("weights", "num_classes", "target_layer", "size", "mean", "std", "checkpoint")


def register(sub: Any) -> None:
    """Add the ``app`` sub-command to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "app",
        help="a local web page showing a classifier's CAMs and F-CAM side by side",
        description=(
            "Serve a web page where you upload an image (or pick an example) and see the "
            "top-5 predictions, the chosen CAM methods and F-CAM as overlays with boxes at a "
            "threshold, their timings, and download each map (PNG, .npy). Needs Gradio: "
            'pip install "fcam[app]". With no classifier option it opens on the demo\'s '
            "classifier and F-CAM (trained and cached on first use, a few minutes on a CPU)."
        ),
    )
    add_model_args(p, required=False)
    p.add_argument(
        "--checkpoint", type=Path, metavar="FILE",
        help="fitted F-CAM for the classifier (fcam fit / FCAM.save); one can also be uploaded",
    )
    p.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; the page has no "
        "authentication)",
    )
    p.add_argument(
        "--port", type=bounded_int(1, 65535), default=None, metavar="N",
        help="TCP port (default: the first free one from 7860)",
    )
    add_common(p)
    p.set_defaults(func=run)


def _demo_models(args: argparse.Namespace) -> tuple[Path, Path, tuple[str, ...]]:
    """The demo's cached classifier and checkpoint files (trained if missing), with the
    synthetic dataset's class names."""
    from fcam.data.synthetic import CLASSES
    from fcam.demo.cached import cached_models, find_cached_models

    if find_cached_models() is None:
        print("fcam app: no classifier given and the demo's is not cached yet: training it and "
              "its F-CAM on synthetic data (once, a few minutes on a CPU)", file=sys.stderr,
              flush=True)
    classifier, checkpoint = cached_models(device=args.device, progress=not args.no_progress)
    return classifier, checkpoint, CLASSES


def run(args: argparse.Namespace) -> int:
    """Run ``fcam app`` until Ctrl-C; returns the exit status."""
    import importlib.util

    from fcam.app.page import INSTALL_HINT

    # Checked without importing Gradio: it must be imported only once serve() has pointed its
    # temporary folder (read at import) into the app's own folder.
    if importlib.util.find_spec("gradio") is None:
        raise UserError(INSTALL_HINT)
    class_names: tuple[str, ...] | None = None
    if args.classifier is None and args.model is None:
        given = [o for o in _MODEL_OPTIONS if getattr(args, o) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise UserError(f"{flag} needs --classifier or --model (without them the app "
                            "opens on the demo's classifier)")
        args.classifier, args.checkpoint, class_names = _demo_models(args)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UserError(f"--checkpoint: file not found: {args.checkpoint}")
    model, spec = load_classifier_args(args)
    from fcam.app.core import load_checkpoint
    from fcam.app.page import AppConfig, serve

    explainer = None
    if args.checkpoint is not None:
        with user_input("--checkpoint"):
            explainer = load_checkpoint(args.checkpoint, model)
    title = ("the demo's classifier (resnet18, synthetic shapes)" if class_names is not None
             else args.classifier.name if args.classifier is not None else args.model)
    config = AppConfig(model, spec, fcam=explainer, class_names=class_names, title=title)
    try:
        return serve(config, host=args.host, port=args.port)
    except ImportError as exc:  # Gradio is installed but cannot be imported
        raise UserError(" ".join(str(exc).split())) from None
