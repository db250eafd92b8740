"""Quick start: fit F-CAM on fcam's embedded synthetic data and compare it with Grad-CAM++.

Steps: train a small ResNet classifier on image labels only (cached in the fcam cache
directory), fit F-CAM on top of the frozen classifier, explain held-out images, measure
pixel AP against the ground-truth masks, and save a comparison grid and the explainer.

Run::

    python examples/01_quickstart.py            # a few minutes on a CPU
    python examples/01_quickstart.py --quick    # seconds (tiny settings, used by the tests)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import fcam
from fcam import cams
from fcam.data import SyntheticWSOL
from fcam.demo import ClassifierConfig, evaluate_accuracy, train_classifier
from fcam.metrics import pxap
from fcam.viz import comparison_grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--out", type=Path, default=Path("fcam_examples_out/quickstart"))
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda (default: auto)")
    parser.add_argument("--epochs", type=int, default=None, help="F-CAM epochs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    size = 64 if args.quick else 128

    # 1. A classifier trained on image-level labels only (weights cached after the first run).
    config = ClassifierConfig(
        image_size=size,
        n_train=100 if args.quick else 2000,
        epochs=2 if args.quick else 12,
        batch_size=25 if args.quick else 64,
    )
    model = train_classifier(config, device=device, progress=not args.quick)
    test = SyntheticWSOL(20 if args.quick else 200, size=size, seed=1, split="test")
    print(f"classifier accuracy on the test split: {evaluate_accuracy(model, test):.1f}%")

    # 2. F-CAM on top of the frozen classifier. Batches are dicts with "image", "label" and
    #    "raw" (the uint8 image used by the CRF loss).
    train = SyntheticWSOL(60 if args.quick else 1000, size=size, seed=2, split="train")
    loader = DataLoader(train, batch_size=20 if args.quick else 32, shuffle=True)
    explainer = fcam.FCAM(model, target_layer="layer4", cam="gradcampp")
    epochs = args.epochs or (1 if args.quick else 5)
    explainer.fit(loader, epochs=epochs, device=device, progress=not args.quick)

    # 3. Explain held-out images: F-CAM vs the interpolated Grad-CAM++ map for the true class.
    batch = next(iter(DataLoader(test, batch_size=len(test))))
    images, labels = batch["image"].to(device), batch["label"].to(device)
    with torch.no_grad():
        fcam_maps = explainer.explain(images, targets=labels)
    with cams.create("gradcampp", model, target_layer="layer4") as extractor:
        cam_maps = extractor.explain(images, targets=labels)

    scores = {
        "Grad-CAM++ PxAP": pxap(cam_maps, batch["mask"]),
        "F-CAM PxAP": pxap(fcam_maps, batch["mask"]),
    }
    for name, value in scores.items():
        print(f"{name}: {value:.1f}")

    # 4. Save a picture and the trained explainer.
    shown = slice(0, 6)
    comparison_grid(
        batch["raw"][shown],
        {"Grad-CAM++": cam_maps[shown], "F-CAM": fcam_maps[shown]},
        gt=batch["mask"][shown],
        boxes=batch["box"][shown],
        path=args.out / "quickstart_grid.png",
    )
    explainer.save(args.out / "fcam.pt")
    print(f"wrote {args.out / 'quickstart_grid.png'} and {args.out / 'fcam.pt'}")
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
