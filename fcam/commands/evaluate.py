"""``fcam evaluate``: WSOL scores of an interpolated CAM or a fitted F-CAM on a dataset split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fcam.commands.common import (
    UserError,
    add_common,
    add_dataset_args,
    add_method_args,
    positive_float,
)
from fcam.commands.sources import MapSource, add_model_args, load_classifier_args, open_dataset

DESCRIPTION = (
    "Evaluate an interpolated CAM method (--cam) or a fitted F-CAM checkpoint (--checkpoint) "
    "on one split in the wsolevaluation layout (image_ids.txt, class_labels.txt, "
    "image_sizes.txt, localization.txt), with ground-truth-class maps. Box datasets (CUB, "
    "ILSVRC) give MaxBoxAccV2, MaxBoxAcc and top-1 loc; mask datasets (OpenImages) give PxAP. "
    "With --mask-dir instead of --metadata, on a folder of photographs paired by file stem with "
    "figure/ground masks: PxAP, and MaxBoxAccV2/MaxBoxAcc against each mask's bounding box, "
    "for --label (default: the classifier's prediction)."
)


def register(sub: Any) -> None:
    """Add the ``evaluate`` sub-command to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "evaluate",
        help="evaluate CAM or a fitted F-CAM on a wsolevaluation-layout split or a mask folder",
        description=DESCRIPTION,
    )
    add_dataset_args(p)
    add_model_args(p)
    add_method_args(p)
    p.add_argument(
        "--cam-curve-interval",
        type=positive_float,
        default=0.001,
        metavar="STEP",
        help="threshold step of the metrics (default 0.001, the protocol's)",
    )
    p.add_argument("--out", type=Path, default=None, help="also write the scores as JSON here")
    add_common(p)
    p.set_defaults(func=run)


class PredictedLabels:
    """Batches of a loader labelled with the classifier's top-1 class (a mask folder without
    ``--label``: the maps then explain what the classifier sees)."""

    def __init__(self, loader: Any, model: Any) -> None:
        self.loader, self.model = loader, model

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        import torch

        from fcam.core import model_device, model_logits

        device = model_device(self.model)
        for batch in self.loader:
            with torch.no_grad():
                logits = model_logits(self.model(batch["image"].to(device)))
            yield {**batch, "label": logits.argmax(1).cpu()}


def run(args: argparse.Namespace) -> int:
    """Run ``fcam evaluate``; prints the table and returns the exit status."""
    from torch.utils.data import DataLoader

    from fcam.core.io import atomic_write_text
    from fcam.data import wsol_collate
    from fcam.evaluation import evaluate_localization, format_table

    if args.metadata is None and args.mask_dir is None:
        raise UserError("evaluate needs ground truth: --metadata DIR (wsolevaluation layout) or "
                        "--mask-dir DIR (masks paired with the photographs of --data-root)")
    model, spec = load_classifier_args(args)
    dataset = open_dataset(args, spec)
    loader: Any = DataLoader(
        dataset, batch_size=args.batch_size, collate_fn=wsol_collate, num_workers=args.workers
    )
    if args.mask_dir is not None and args.label is None:
        loader = PredictedLabels(loader, model)
    with MapSource(model, spec, args.checkpoint, args.cam, args.cam_exponent,
                   args.cam_mix) as source:
        scores = evaluate_localization(
            source.map_fn(),
            model,
            loader,
            cam_curve_interval=args.cam_curve_interval,
            progress=not args.no_progress,
            desc=source.label,
        )
    print(format_table({source.label: scores}))
    print(
        f"classification accuracy: {scores.classification_acc:.1f}% on {scores.num_images} images"
    )
    if args.out is not None:
        payload = {
            "method": source.label,
            "dataset": str(args.metadata if args.metadata is not None else args.mask_dir),
            "classifier": spec.to_dict(),
            **scores.to_dict(),
        }
        atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
