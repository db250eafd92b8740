"""Evaluate CAMs (and a saved F-CAM) with the wsolevaluation protocol on CUB / OpenImages.

This is the code to run once CUB-200-2011 or OpenImages30k is on disk in the wsolevaluation
layout (an image root plus ``metadata/<dataset>/<split>/`` with ``image_ids.txt``,
``class_labels.txt``, ``image_sizes.txt`` and ``localization.txt``)::

    python examples/04_evaluate_wsol_layout.py --data-root /data/CUB_200_2011/images \\
        --metadata /data/wsolevaluation/metadata/CUB/test --weights cub_resnet50.pt \\
        --arch resnet50 --num-classes 200 [--fcam fcam_cub.pt]

Without ``--data-root`` it first writes fcam's synthetic test images in that layout, twice:
CUB-style (boxes, MaxBoxAccV2) and OpenImages-style (masks, PxAP), and evaluates a classifier
trained on the synthetic training split. ``--fcam`` adds a saved F-CAM (e.g. the ``fcam.pt``
written by ``01_quickstart.py``).

Protocol (see the "Evaluation protocol" page of the docs): images resized to 224 x 224 without
crop; GT-class CAMs upsampled bicubically and then min-max normalised
(:func:`fcam.metrics.prepare_scoremaps`, wsolevaluation's recipe); F-CAM probabilities used as
they are; MaxBoxAccV2 with 1,000 thresholds, IoU 30/50/70; PxAP pooled over all pixels; plus
top-1 / top-5 localisation for box datasets.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader

import fcam
from fcam import cams
from fcam.data import SyntheticWSOL, WSOLDataset, write_wsol_layout, wsol_collate
from fcam.demo import ClassifierConfig, train_classifier
from fcam.metrics import BoxEvaluator, MaskEvaluator, prepare_scoremaps


def write_synthetic_layout(root: Path, n: int, size: int) -> dict[str, tuple[Path, Path]]:
    """Write the synthetic test split as a box dataset and as a mask dataset."""
    test = SyntheticWSOL(n, size=size, seed=1, split="test")
    layouts = {}
    for kind in ("boxes", "masks"):
        images, metadata = root / kind / "images", root / kind / "metadata" / "test"
        samples = (
            {"image_id": test.image_id(i), "image": item["raw"], "label": item["label"],
             "box": item["box"], "mask": item["mask"]}
            for i, item in ((i, test[i]) for i in range(len(test)))
        )
        write_wsol_layout(samples, images, metadata, kind=kind)
        layouts[kind] = (images, metadata)
    return layouts


@torch.no_grad()
def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images)


def evaluate(
    model: nn.Module,
    dataset: WSOLDataset,
    methods: Sequence[str],
    target_layer: str,
    explainer: fcam.FCAM | None = None,
    batch_size: int = 16,
    cam_curve_interval: float = 0.001,
) -> dict[str, dict[str, Any]]:
    """Run every method over ``dataset`` and return the protocol's numbers per method."""
    device = next(model.parameters()).device
    boxes = dataset.kind == "boxes"
    names = list(methods) + (["fcam"] if explainer is not None else [])
    evaluators = {
        name: BoxEvaluator(version=2, cam_curve_interval=cam_curve_interval)
        if boxes else MaskEvaluator(cam_curve_interval=cam_curve_interval)
        for name in names
    }
    extractors = {name: cams.create(name, model, target_layer=target_layer) for name in methods}
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=wsol_collate)
    model.eval()
    for batch in loader:
        images = batch["image"].to(device)
        labels = batch["label"].to(device)
        frame = tuple(images.shape[-2:])
        maps = {name: prepare_scoremaps(ex(images, targets=labels), frame)
                for name, ex in extractors.items()}
        if explainer is not None:
            with torch.no_grad():
                maps["fcam"] = explainer.explain(images, targets=labels)  # GT class, as the CAMs
        logits = _logits(model, images) if boxes else None
        for name, value in maps.items():
            if boxes:
                evaluators[name].update(value, batch["boxes"], labels=labels, logits=logits)
            else:
                evaluators[name].update(value, batch["mask"], batch.get("ignore"))
    return {name: ev.compute().to_dict() for name, ev in evaluators.items()}


def load_classifier(args: argparse.Namespace, device: torch.device) -> nn.Module:
    if args.weights is None:
        # The synthetic data's classifier (cached; the quick settings match 01_quickstart.py).
        config = ClassifierConfig(image_size=64, n_train=100, epochs=2, batch_size=25) if args.quick \
            else ClassifierConfig()
        return train_classifier(config, device=device, progress=not args.quick)
    model = getattr(torchvision.models, args.arch)(weights=None, num_classes=args.num_classes)
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny synthetic run (seconds)")
    parser.add_argument("--data-root", type=Path, help="image root of a real dataset")
    parser.add_argument("--metadata", type=Path, help="metadata/<dataset>/<split> folder")
    parser.add_argument("--mask-root", type=Path, help="OpenImages mask root (default: data root)")
    parser.add_argument("--weights", type=Path, help="classifier state_dict (torchvision arch)")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--num-classes", type=int, default=200)
    parser.add_argument("--target-layer", default="layer4")
    parser.add_argument("--methods", default="cam,gradcam,gradcampp,layercam")
    parser.add_argument("--fcam", type=Path, help="an F-CAM saved with FCAM.save")
    parser.add_argument("--size", type=int, default=None, help="evaluation side (protocol: 224)")
    parser.add_argument("--out", type=Path, default=Path("fcam_examples_out/evaluation"))
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = args.size or (64 if args.quick else 224)
    interval = 0.01 if args.quick else 0.001

    if args.data_root is not None:
        if args.metadata is None:
            parser.error("--data-root needs --metadata")
        datasets = {"data": WSOLDataset(args.data_root, args.metadata, mask_root=args.mask_root,
                                        size=size)}
    else:
        layouts = write_synthetic_layout(args.out / "synthetic", 20 if args.quick else 200,
                                         64 if args.quick else 128)
        datasets = {kind: WSOLDataset(images, metadata, size=size)
                    for kind, (images, metadata) in layouts.items()}

    model = load_classifier(args, device)
    explainer = fcam.FCAM.load(args.fcam, model) if args.fcam else None
    methods = [m for m in args.methods.split(",") if m]
    results = {}
    for name, dataset in datasets.items():
        results[name] = evaluate(model, dataset, methods, args.target_layer, explainer,
                                 cam_curve_interval=interval)
        headline = "MaxBoxAccV2" if dataset.kind == "boxes" else "PxAP"
        print(f"{name} ({len(dataset)} images, {dataset.kind}):")
        for method, numbers in results[name].items():
            extra = ""
            if numbers.get("top1_loc"):
                extra = f"  top-1 loc@50 {numbers['top1_loc']['50']:.1f}"
            print(f"  {method:>10}: {headline} {numbers[headline]:.1f}{extra}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'results.json'}")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
