"""The ``fcam`` command line.

Sub-commands:

* ``fcam demo``: synthetic data, a ResNet-18 trained from scratch, F-CAM fitted on two seed
  CAMs, and the WSOL metrics of interpolated CAM versus F-CAM (see :mod:`fcam.demo.pipeline`);
* ``fcam evaluate``: PxAP / MaxBoxAccV2 / MaxBoxAcc / top-1 loc of an interpolated CAM or of
  a fitted F-CAM checkpoint on a dataset in the wsolevaluation layout;
* ``fcam explain``: overlays of F-CAM (or CAM) maps on image files.

User errors (bad arguments, missing files) end with exit status 2 and one line
``fcam: error: ...`` on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fcam import __version__

T = TypeVar("T", int, float)

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

_EPILOG = """\
examples:
  fcam demo --quick                       # about 3 minutes on a laptop CPU
  fcam demo --out fcam-demo --device cuda
  fcam evaluate --data-root dataset/CUB --metadata metadata/CUB/test \\
      --classifier fcam-demo/classifier.pt --checkpoint fcam-demo/fcam-gradcampp.pt
  fcam explain bird.jpg --classifier fcam-demo/classifier.pt \\
      --checkpoint fcam-demo/fcam-gradcampp.pt --out overlays/
"""


class _UserError(Exception):
    """An error caused by the command line or the user's files: reported in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints the full usage block; one line is easier to act on.
        where = self.prog.removeprefix("fcam").strip()
        raise _UserError(f"{where + ': ' if where else ''}{message} (see '{self.prog} --help')")


def _number_type(
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


_positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number_type(float, lambda v: v > 0, "a positive number")


def _cam_list(text: str) -> tuple[str, ...]:
    from fcam.cams import available

    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in available()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown CAM method(s) {', '.join(unknown) or repr(text)}; "
            f"choose from {','.join(available())}"
        )
    return names


def _cam_name(text: str) -> str:
    names = _cam_list(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"expected one CAM method, got {text!r}")
    return names[0]


def _device(text: str) -> str:
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} requested but CUDA is not available")
    return text


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        type=_device,
        default=None,
        help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v: info, -vv: debug)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fcam",
        description="F-CAM: full-resolution class activation maps for PyTorch classifiers.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fcam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser(
        "demo",
        help="train a classifier and F-CAM on synthetic data and compare with CAM",
        description=(
            "Generate the embedded synthetic WSOL dataset, train a ResNet-18 from scratch "
            "(cached in $FCAM_CACHE_DIR, $XDG_CACHE_HOME/fcam or ~/.cache/fcam, so reruns "
            "are quick), fit F-CAM on each seed CAM, and evaluate the interpolated CAM and "
            "F-CAM on the test split. Prints the table and writes results.json, results.md, "
            "overlays/ and comparison_grid.png to --out."
        ),
    )
    from fcam.demo.config import DemoConfig

    full, quick = DemoConfig(), DemoConfig.quick()

    def preset(attr: str) -> str:
        return f"default {getattr(full, attr)}, --quick {getattr(quick, attr)}"

    demo.add_argument(
        "--quick",
        action="store_true",
        help="small preset (fewer images and epochs): about 3 minutes on a 2-core CPU",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("fcam-demo"),
        metavar="DIR",
        help="output folder (default: ./fcam-demo)",
    )
    demo.add_argument(
        "--seed", type=_non_negative_int, default=0, metavar="N", help="seed (default 0)"
    )
    demo.add_argument(
        "--cams",
        type=_cam_list,
        default=("cam", "gradcampp"),
        metavar="LIST",
        help="comma-separated seed CAM methods (default: cam,gradcampp)",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        metavar="N",
        help=f"F-CAM epochs per CAM method ({preset('fcam_epochs')})",
    )
    demo.add_argument(
        "--classifier-epochs",
        type=_positive_int,
        metavar="N",
        help=f"classifier epochs ({preset('classifier_epochs')})",
    )
    demo.add_argument(
        "--n-train", type=_positive_int, metavar="N", help=f"training images ({preset('n_train')})"
    )
    demo.add_argument(
        "--n-test", type=_positive_int, metavar="N", help=f"test images ({preset('n_test')})"
    )
    demo.add_argument(
        "--image-size",
        type=_positive_int,
        metavar="PX",
        help=f"image side in pixels (default {full.image_size})",
    )
    demo.add_argument(
        "--crf-weight",
        type=_positive_float,
        metavar="W",
        help="F-CAM CRF weight at the 224x224 reference (default: fcam.FCAM's)",
    )
    demo.add_argument(
        "--no-cache",
        action="store_true",
        help="retrain the classifier and F-CAM instead of using the cache",
    )
    _add_common(demo)
    demo.set_defaults(func=_run_demo)

    ev = sub.add_parser(
        "evaluate",
        help="evaluate CAM or a fitted F-CAM on a wsolevaluation-layout dataset",
        description=(
            "Evaluate an interpolated CAM method (--cam) or a fitted F-CAM checkpoint "
            "(--checkpoint) on one split in the wsolevaluation layout (image_ids.txt, "
            "class_labels.txt, image_sizes.txt, localization.txt). Box datasets (CUB, ILSVRC) "
            "give MaxBoxAccV2, MaxBoxAcc and top-1 loc; mask datasets (OpenImages) give PxAP."
        ),
    )
    ev.add_argument("--data-root", type=Path, required=True, help="image root folder")
    ev.add_argument(
        "--metadata",
        type=Path,
        required=True,
        help="the split's metadata folder, e.g. metadata/CUB/test",
    )
    ev.add_argument(
        "--mask-root", type=Path, default=None, help="root of mask paths (default: --data-root)"
    )
    ev.add_argument(
        "--classifier",
        type=Path,
        required=True,
        help="classifier checkpoint (the demo's classifier.pt or a ResNet state dict)",
    )
    ev.add_argument(
        "--arch",
        default=None,
        choices=["resnet18", "resnet34", "resnet50"],
        help="ResNet of a bare state dict (default: from the checkpoint, or resnet18)",
    )
    method = ev.add_mutually_exclusive_group(required=True)
    method.add_argument("--checkpoint", type=Path, help="F-CAM checkpoint (FCAM.save)")
    method.add_argument("--cam", type=_cam_name, help="interpolated CAM method, e.g. gradcampp")
    ev.add_argument(
        "--size",
        type=_positive_int,
        default=224,
        help="evaluation frame side (default 224, the protocol's)",
    )
    ev.add_argument("--batch-size", type=_positive_int, default=32)
    ev.add_argument("--cam-curve-interval", type=_positive_float, default=0.001)
    ev.add_argument("--out", type=Path, default=None, help="also write the scores as JSON here")
    _add_common(ev)
    ev.set_defaults(func=_run_evaluate)

    ex = sub.add_parser(
        "explain",
        help="write F-CAM (or CAM) overlays for image files",
        description="Write one overlay PNG per image (and the raw map as .npy with --save-maps).",
    )
    ex.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    ex.add_argument("--classifier", type=Path, required=True, help="classifier checkpoint")
    ex.add_argument("--arch", default=None, choices=["resnet18", "resnet34", "resnet50"])
    ex_method = ex.add_mutually_exclusive_group(required=True)
    ex_method.add_argument("--checkpoint", type=Path, help="F-CAM checkpoint (FCAM.save)")
    ex_method.add_argument("--cam", type=_cam_name, help="interpolated CAM method instead")
    ex.add_argument("--out", type=Path, required=True, help="output folder for the overlays")
    ex.add_argument(
        "--size",
        type=_positive_int,
        default=None,
        help="input side (default: the classifier's training size, else 224)",
    )
    ex.add_argument(
        "--target", type=int, default=None, help="class to explain (default: the predicted class)"
    )
    ex.add_argument("--save-maps", action="store_true", help="also write the maps as .npy")
    _add_common(ex)
    ex.set_defaults(func=_run_explain)
    return parser


# ------------------------------------------------------------------------------ commands
def _run_demo(args: argparse.Namespace) -> int:
    from fcam.demo.pipeline import DemoConfig, run_demo

    overrides: dict[str, Any] = {
        "out_dir": args.out,
        "seed": args.seed,
        "cams": args.cams,
        "device": args.device,
        "cache": not args.no_cache,
        "progress": not args.no_progress,
    }
    for option, key in (
        ("epochs", "fcam_epochs"),
        ("classifier_epochs", "classifier_epochs"),
        ("n_train", "n_train"),
        ("n_test", "n_test"),
        ("image_size", "image_size"),
    ):
        if getattr(args, option) is not None:
            overrides[key] = getattr(args, option)
    if args.crf_weight is not None:
        overrides["fcam_options"] = {"crf_weight": args.crf_weight}
    config = DemoConfig.quick(**overrides) if args.quick else DemoConfig(**overrides)
    result = run_demo(config)
    print(result.table)
    print()
    for line in result.gains:
        print(line)
    print(f"classifier test accuracy: {result.classifier_accuracy:.1f}%")
    print(f"wrote {result.files['markdown']}, {result.files['json']}", end="")
    print(f", {result.files['grid']}" if "grid" in result.files else "")
    print(f"total time: {result.timings['total']:.0f} s")
    return 0


def _load_explainer(args: argparse.Namespace, model: Any) -> Any:
    if args.checkpoint is None:
        return None
    if not args.checkpoint.is_file():
        raise FileNotFoundError(f"F-CAM checkpoint not found: {args.checkpoint}")
    from fcam import FCAM

    return FCAM.load(args.checkpoint, model)


def _run_evaluate(args: argparse.Namespace) -> int:
    import json

    import torch
    from torch.utils.data import DataLoader

    from fcam.data import WSOLDataset, wsol_collate
    from fcam.demo.classifier import load_classifier
    from fcam.evaluation import evaluate_localization
    from fcam.core.io import atomic_write_text
    from fcam.evaluation import format_table

    model, meta = load_classifier(args.classifier, arch=args.arch, device=args.device)
    for p in model.parameters():
        p.requires_grad_(False)
    if not args.metadata.is_dir():
        raise FileNotFoundError(f"metadata folder not found: {args.metadata}")
    dataset = WSOLDataset(
        args.data_root,
        args.metadata,
        mask_root=args.mask_root,
        size=args.size,
        num_classes=int(str(meta["num_classes"])),
    )
    loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=wsol_collate)
    explainer = _load_explainer(args, model)
    if explainer is not None:
        label = f"F-CAM ({args.checkpoint.name})"

        def map_fn(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return explainer.explain(images, labels)

        scores = evaluate_localization(
            map_fn,
            model,
            loader,
            cam_curve_interval=args.cam_curve_interval,
            progress=not args.no_progress,
            desc=label,
        )
    else:
        from fcam.cams import create

        label = f"{args.cam} (interpolated)"
        with create(args.cam, model, "layer4") as extractor:
            scores = evaluate_localization(
                lambda images, labels: extractor.explain(images, labels, size=images.shape[-2:]),
                model,
                loader,
                cam_curve_interval=args.cam_curve_interval,
                progress=not args.no_progress,
                desc=label,
            )
    print(format_table({label: scores}))
    print(
        f"classification accuracy: {scores.classification_acc:.1f}% on {scores.num_images} images"
    )
    if args.out is not None:
        payload = {"method": label, "dataset": str(args.metadata), **scores.to_dict()}
        atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _read_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise ValueError(f"not a readable image file: {path}") from None


def _run_explain(args: argparse.Namespace) -> int:
    import io

    import numpy as np
    import torch
    from PIL import Image

    from fcam.data.synthetic import IMAGENET_MEAN, IMAGENET_STD
    from fcam.data.wsol_writer import atomic_write_bytes
    from fcam.demo.classifier import load_classifier
    from fcam.demo.report import write_png as atomic_write_png
    from fcam.viz import overlay

    pil_images = [_read_image(p) for p in args.images]  # fail before any heavy work
    model, meta = load_classifier(args.classifier, arch=args.arch, device=args.device)
    for p in model.parameters():
        p.requires_grad_(False)
    num_classes = int(str(meta["num_classes"]))
    if args.target is not None and not 0 <= args.target < num_classes:
        raise ValueError(f"--target must be in [0, {num_classes}), got {args.target}")
    size = int(str(args.size or meta.get("image_size") or 224))
    device = next(model.parameters()).device
    explainer = _load_explainer(args, model)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    extractor = None
    if explainer is None:
        from fcam.cams import create

        extractor = create(args.cam, model, "layer4")
    try:
        for path, pil in zip(args.images, pil_images):
            resized = pil.resize((size, size), Image.Resampling.BILINEAR)
            raw = torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1)
            images = ((raw.float() / 255 - mean) / std)[None].to(device)
            with torch.no_grad():
                logits = model(images)
            target = int(logits.argmax(1)) if args.target is None else args.target
            if explainer is not None:
                with torch.no_grad():
                    maps = explainer.explain(images, [target])
            else:
                assert extractor is not None  # built above whenever explainer is None
                maps = extractor.explain(images, [target], size=(size, size))
            heat = maps[0].float().cpu()
            stem = args.out / f"{path.stem}-class{target}"
            atomic_write_png(stem.with_suffix(".png"), overlay(raw, heat))
            if args.save_maps:
                buffer = io.BytesIO()
                np.save(buffer, heat.numpy())
                atomic_write_bytes(stem.with_suffix(".npy"), buffer.getvalue())
            print(
                f"{path} -> {stem.with_suffix('.png')} (class {target}, "
                f"p={float(logits.softmax(1)[0, target]):.2f})"
            )
    finally:
        if extractor is not None:
            extractor.remove_hooks()
    return 0


# ---------------------------------------------------------------------------------- main
def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fcam`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stdout)
            return 0
        _configure_logging(args.verbose)
        return int(args.func(args))
    except _UserError as exc:
        print(f"fcam: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"fcam: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fcam: interrupted", file=sys.stderr)
        return 130
