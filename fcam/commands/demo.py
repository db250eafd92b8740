"""``fcam demo``: the synthetic end-to-end job of :mod:`fcam.demo` (the only command that
imports :mod:`fcam.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fcam.commands.common import (
    MAX_SIZE,
    add_common,
    cam_list,
    non_negative_int,
    positive_float,
    positive_int,
    size_int,
)


def register(sub: Any) -> None:
    """Add the ``demo`` sub-command to ``sub`` (an argparse subparsers action)."""
    from fcam.demo.config import DemoConfig  # torch-free: presets for the help text

    p = sub.add_parser(
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
    full, quick = DemoConfig(), DemoConfig.quick()

    def preset(attr: str) -> str:
        return f"default {getattr(full, attr)}, --quick {getattr(quick, attr)}"

    p.add_argument(
        "--quick",
        action="store_true",
        help="small preset (fewer images and epochs): about 3 minutes on a 2-core CPU",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("fcam-demo"),
        metavar="DIR",
        help="output folder (default: ./fcam-demo)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="N", help="seed (default 0)")
    p.add_argument(
        "--cams",
        type=cam_list,
        default=("cam", "gradcampp"),
        metavar="LIST",
        help="comma-separated seed CAM methods (default: cam,gradcampp)",
    )
    for option, attr, what in (
        ("--epochs", "fcam_epochs", "F-CAM epochs per CAM method"),
        ("--classifier-epochs", "classifier_epochs", "classifier epochs"),
        ("--n-train", "n_train", "training images"),
        ("--n-test", "n_test", "test images"),
    ):
        p.add_argument(option, type=positive_int, metavar="N", help=f"{what} ({preset(attr)})")
    p.add_argument(
        "--image-size",
        type=size_int,
        metavar="PX",
        help=f"image side in pixels, at most {MAX_SIZE} (default {full.image_size})",
    )
    p.add_argument(
        "--crf-weight",
        type=positive_float,
        metavar="W",
        help="F-CAM CRF weight at the 224x224 reference (default: fcam.FCAM's)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="retrain the classifier and F-CAM instead of using the cache",
    )
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``fcam demo``; prints the table and returns the exit status."""
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
    if "report" in result.files:
        print(f"report: {result.files['report']}")
    print(f"total time: {result.timings['total']:.0f} s")
    return 0
