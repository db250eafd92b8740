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
    device_loading,
    positive_float,
)
from fcam.commands.sources import MapSource, add_model_args, load_classifier_args, open_dataset

DESCRIPTION = (
    "Evaluate an interpolated CAM method (--cam), a fitted F-CAM checkpoint (--checkpoint), or "
    "both side by side, "
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
    add_method_args(p, exclusive=False)
    p.add_argument(
        "--cam-curve-interval",
        type=positive_float,
        default=0.001,
        metavar="STEP",
        help="threshold step of the metrics (default 0.001, the protocol's)",
    )
    p.add_argument("--out", type=Path, default=None, help="also write the scores as JSON here")
    p.add_argument(
        "--report", type=Path, default=None, metavar="DIR",
        help="also write an HTML report (DIR/index.html): metrics, threshold-sensitivity and "
        'precision-recall curves, failure and best-case galleries; needs pip install "fcam[report]"',
    )
    add_common(p)
    p.set_defaults(func=run)


class _Recorder:
    """Keeps what the report draws while ``evaluate_localization`` runs: the images (uint8) and
    ground truth of the batches (first pass only) and every source's maps, all on the CPU (the
    report needs every map: N x H x W float32 per source)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.maps: dict[str, list[Any]] = {}
        self.logits: list[Any] = []

    def loader(self, loader: Any, record: bool, spec: Any) -> Any:
        import torch

        mean = torch.as_tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
        for batch in loader:
            if record:
                kept = {k: batch[k] for k in ("label", "boxes", "mask", "image_id") if k in batch}
                # The pixels as uint8 (a quarter of the float images' memory) for the overlays.
                pixels = (batch["image"].float().cpu() * std + mean).clamp(0, 1) * 255
                kept["image"] = pixels.round().to(torch.uint8)
                self.batches.append(kept)
            yield batch

    def map_fn(self, label: str, map_fn: Any, model: Any, record_logits: bool) -> Any:
        import torch

        self.maps[label] = []

        def recorded(images: Any, labels: Any) -> Any:
            maps = map_fn(images, labels)
            self.maps[label].append(torch.as_tensor(maps).detach().float().cpu())
            if record_logits:
                from fcam.core import model_logits

                with torch.no_grad():
                    self.logits.append(model_logits(model(images), None).float().cpu())
            return maps

        return recorded

    def write(self, args: argparse.Namespace, spec: Any, sources: list[MapSource]) -> Path:
        import torch

        from fcam.evaluation import write_report

        def cat(key: str) -> Any:
            return torch.cat([b[key] for b in self.batches]) if key in self.batches[0] else None

        boxes = ([box for b in self.batches for box in b["boxes"]]
                 if "boxes" in self.batches[0] else None)
        ids = [str(i) for b in self.batches for i in b.get("image_id", [])] or None
        meta: dict[str, Any] = {"dataset": _dataset(args), "model": spec.model,
                                "layer": spec.target_layer}
        for source in sources:
            if source.explainer is not None:
                meta["checkpoint"] = args.checkpoint
                meta["checkpoint sha256"] = _sha256(args.checkpoint)
        return write_report(
            args.report, cat("image"), masks=cat("mask"), boxes=boxes,
            maps={label: torch.cat(parts) for label, parts in self.maps.items()},
            title=f"fcam evaluate: {', '.join(s.label for s in sources)}", meta=meta,
            labels=cat("label"), logits=torch.cat(self.logits),
            image_ids=ids, cam_curve_interval=args.cam_curve_interval,
        )


def _dataset(args: argparse.Namespace) -> Path:
    """The ground truth's folder: ``--metadata`` or ``--mask-dir``."""
    return args.metadata if args.metadata is not None else args.mask_dir


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    from contextlib import ExitStack

    from torch.utils.data import DataLoader

    from fcam.core.io import atomic_write_text
    from fcam.data import wsol_collate
    from fcam.evaluation import evaluate_localization, format_table

    if args.cam is None and args.checkpoint is None:
        raise UserError("evaluate needs --cam NAME, --checkpoint FILE, or both to compare them")
    if args.report is not None:
        from fcam.evaluation.figures import MATPLOTLIB_MISSING, require_matplotlib

        try:
            require_matplotlib()
        except ImportError:
            raise UserError(MATPLOTLIB_MISSING) from None
    if args.metadata is None and args.mask_dir is None:
        raise UserError("evaluate needs ground truth: --metadata DIR (wsolevaluation layout) or "
                        "--mask-dir DIR (masks paired with the photographs of --data-root)")
    model, spec = load_classifier_args(args)
    dataset = open_dataset(args, spec)
    loader: Any = DataLoader(
        dataset, batch_size=args.batch_size, collate_fn=wsol_collate, num_workers=args.workers,
        **device_loading(model),
    )
    if args.mask_dir is not None and args.label is None:
        loader = PredictedLabels(loader, model)
    recorder = _Recorder() if args.report is not None else None
    rows = {}
    with ExitStack() as stack:
        sources = [stack.enter_context(MapSource(model, spec, None, args.cam))] if args.cam else []
        if args.checkpoint is not None:
            sources.append(stack.enter_context(MapSource(
                model, spec, args.checkpoint, None, args.cam_exponent, args.cam_mix)))
        elif args.cam_exponent is not None or args.cam_mix is not None:
            MapSource(model, spec, None, args.cam, args.cam_exponent, args.cam_mix)  # its error
        for n, source in enumerate(sources):
            map_fn, batches = source.map_fn(), loader
            if recorder is not None:
                map_fn = recorder.map_fn(source.label, map_fn, model, record_logits=n == 0)
                batches = recorder.loader(loader, record=n == 0, spec=spec)
            rows[source.label] = evaluate_localization(
                map_fn, model, batches, cam_curve_interval=args.cam_curve_interval,
                progress=not args.no_progress, desc=source.label,
            )
    print(format_table(rows))
    scores = next(iter(rows.values()))
    print(
        f"classification accuracy: {scores.classification_acc:.1f}% on {scores.num_images} images"
    )
    if args.out is not None:
        base = {"dataset": str(_dataset(args)), "classifier": spec.to_dict()}
        if len(rows) == 1:
            payload = {"method": next(iter(rows)), **base, **scores.to_dict()}
        else:
            payload = {**base, "results": {label: s.to_dict() for label, s in rows.items()}}
        atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")
    if recorder is not None:
        print(f"wrote {recorder.write(args, spec, sources)}")
    return 0
