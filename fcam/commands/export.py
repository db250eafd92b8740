"""``fcam export``: maps of a whole dataset as ``.npy`` and/or ``.png`` files, resumable.

The map of image ``a/b.jpg`` (its path under ``--data-root``, or its wsolevaluation
``image_id``) goes to ``<out>/a/b.jpg.npy`` (float32 ``(S, S)`` in [0, 1], the layout
:func:`fcam.metrics.evaluate_scoremap_dir` reads) and ``<out>/a/b.jpg.png`` (8-bit greyscale).
Images whose files all exist already are skipped, so an interrupted export resumes where it
stopped (``--overwrite`` redoes everything). Every file is written atomically.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from fcam.commands.common import (
    UserError,
    add_common,
    add_dataset_args,
    add_method_args,
    device_loading,
    make_dir,
    map_formats,
    map_to_uint8,
    write_npy,
)
from fcam.commands.sources import MapSource, add_model_args, load_classifier_args, open_dataset
from fcam.core.io import atomic_write_png as write_png

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add the ``export`` sub-command to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "export",
        help="write F-CAM (or CAM) maps of a whole dataset as .npy/.png files",
        description=__doc__.split("\n\n", 1)[1].replace("``", "'"),
    )
    add_dataset_args(p)
    add_model_args(p)
    add_method_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--format",
        type=map_formats,
        default=("npy",),
        metavar="LIST",
        help="comma-separated: npy, png or npy,png (default npy)",
    )
    p.add_argument(
        "--target",
        choices=("predicted", "label"),
        default="predicted",
        help="class of the CAM: the classifier's prediction (default) or the dataset's label "
        "(GT-known); an F-CAM map is for that class too (its class head and CAM weighting)",
    )
    p.add_argument("--overwrite", action="store_true", help="rewrite files that exist")
    add_common(p)
    p.set_defaults(func=run)


def _outputs(out: Path, image_id: str, formats: tuple[str, ...]) -> list[Path]:
    if Path(image_id).is_absolute() or ".." in Path(image_id).parts:
        raise UserError(f"image id {image_id!r} is not a relative path")
    return [out / f"{image_id}.{fmt}" for fmt in formats]


class _Pending:
    """The images still to export, as dicts with ``image``, ``label`` and ``index``."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.dataset[self.indices[i]]
        return {"image": item["image"], "label": int(item["label"]), "index": self.indices[i]}


def _write(paths: list[Path], heat: Any) -> None:
    for path in paths:
        if path.suffix == ".npy":
            write_npy(path, heat.numpy())
        else:
            write_png(path, map_to_uint8(heat))


def run(args: argparse.Namespace) -> int:
    """Run ``fcam export``; returns the exit status."""
    from torch.utils.data import DataLoader

    from fcam.core import model_device
    from fcam.core.progress import progress_bar

    model, spec = load_classifier_args(args)
    dataset = open_dataset(args, spec)
    make_dir(args.out, "--out")
    outputs = [_outputs(args.out, image_id, args.format) for image_id in dataset.image_ids]
    pending = [
        i for i, paths in enumerate(outputs) if args.overwrite or not all(p.is_file() for p in paths)
    ]
    skipped = len(outputs) - len(pending)
    if skipped:
        logger.info("%d of %d images already exported: skipped", skipped, len(outputs))
    device = model_device(model)
    loader: DataLoader[Any] = DataLoader(
        _Pending(dataset, pending),  # type: ignore[arg-type]  # a map-style dataset
        batch_size=args.batch_size,
        num_workers=args.workers,
        **device_loading(model),
    )
    with MapSource(model, spec, args.checkpoint, args.cam, args.cam_exponent,
                   args.cam_mix) as source:
        map_fn = source.map_fn()
        bar = progress_bar(total=len(pending), enabled=not args.no_progress,
                           desc=f"export {source.label}", unit="img")
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            targets = batch["label"].to(device, non_blocking=True) if args.target == "label" else None
            if targets is not None and int(targets.max()) >= (spec.num_classes or 1 << 62):
                raise UserError(
                    f"--target label: label {int(targets.max())} out of range for a "
                    f"classifier with {spec.num_classes} classes"
                )
            maps = map_fn(images, targets).float().cpu()
            for index, heat in zip(batch["index"].tolist(), maps):
                _write(outputs[index], heat)
            bar.update(len(maps))
        bar.close()
    print(f"exported {len(pending)} images to {args.out} ({skipped} already there)")
    return 0
