"""Make the pictures of the docs that come from running fcam: the demo grid and a CAM gallery.

Run from the repository root (a GPU makes the full run take a few minutes)::

    python docs/_scripts/make_gallery.py                 # writes docs/_static/demo_grid.png
                                                         # and docs/_static/overlay_gallery.png
    python docs/_scripts/make_gallery.py --quick         # small settings, for a smoke test

1. ``demo_grid.png``: :func:`fcam.demo.run_demo` with its default settings (classifier and
   F-CAM trained on the synthetic data); its comparison grid shows each test image, the ground
   truth, the interpolated seed CAMs and the F-CAM maps.
2. ``overlay_gallery.png``: the nine CAM extractors of :mod:`fcam.cams` on four test images
   for the demo's classifier (ground-truth class), drawn with :func:`fcam.viz.comparison_grid`.

The pictures are committed; re-run this script when the methods or the demo change.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fcam import cams
from fcam.data import SyntheticWSOL
from fcam.demo import DemoConfig, load_classifier, run_demo
from fcam.demo.config import DEMO_CAMS
from fcam.viz import comparison_grid


def cam_gallery(classifier: Path, config: DemoConfig, output: Path, quick: bool) -> None:
    model, _ = load_classifier(classifier, device=config.device)
    test = SyntheticWSOL(4, size=config.image_size, seed=config.seed, split="test")
    batch = next(iter(DataLoader(test, batch_size=len(test))))
    device = next(model.parameters()).device
    images, labels = batch["image"].to(device), batch["label"].to(device)
    maps = {}
    for name in cams.available():
        title = DEMO_CAMS.get(name, name)
        options: dict[str, object] = {}
        if name in ("scorecam", "sscam", "iscam"):
            options["batch_size"] = 64 if quick else 256
        if name in ("sscam", "iscam") and quick:
            options["num_samples"] = 2
        if name in ("smoothgradcampp", "sscam"):
            options["seed"] = 0
        with cams.create(name, model, target_layer="layer4", **options) as extractor:
            maps[title] = extractor.explain(images, targets=labels)
    comparison_grid(batch["raw"], maps, gt=batch["mask"], boxes=batch["box"], path=output)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default=None)
    default = Path(__file__).resolve().parents[1] / "_static"
    parser.add_argument("--out-dir", type=Path, default=default)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        options = {"out_dir": Path(work), "device": args.device, "progress": False}
        config = DemoConfig.quick(**options) if args.quick else DemoConfig(**options)
        run_demo(config)
        shutil.copyfile(Path(work) / "comparison_grid.png", args.out_dir / "demo_grid.png")
        cam_gallery(Path(work) / "classifier.pt", config, args.out_dir / "overlay_gallery.png",
                    args.quick)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    main()
