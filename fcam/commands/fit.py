"""``fcam fit``: train F-CAM on a frozen classifier from an image folder.

The images come from an ``ImageFolder`` (one sub-folder per class), with ``--metadata`` from a
split in the wsolevaluation layout, or with ``--mask-dir`` from a folder of photographs (their
masks are not used for training). Labels pick the class of the seed CAM (the folder order of an
``ImageFolder`` must then match the classifier's classes; ``--label`` for a photograph folder);
with ``--use-predictions`` the classifier's prediction is used instead. ``--val-data-root`` and
``--val-mask-dir``, a few photographs with figure/ground masks, keep the epoch with the best
validation PxAP. A checkpoint is written after every epoch (``--checkpoint-dir``), so
``--resume`` continues an interrupted run.
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
    add_map_args,
    add_mask_folder_args,
    cam_name,
    device_loading,
    make_dir,
    non_negative_int,
    positive_float,
    positive_int,
    user_input,
)
from fcam.commands.sources import (
    add_model_args,
    load_classifier_args,
    open_dataset,
    open_mask_folder,
)

logger = logging.getLogger(__name__)

#: fcam.explainer.trainer.LR_SCHEDULES, spelled out so that parsing does not import torch.
CLI_LR_SCHEDULES = ("constant", "cosine")
#: fcam.losses.seeds.COLOUR_MODES, spelled out for the same reason.
CLI_COLOUR_MODES = ("filter", "weight")


def register(sub: Any) -> None:
    """Add the ``fit`` sub-command to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "fit",
        help="train F-CAM on a frozen classifier from an image folder",
        description=__doc__.split("\n\n", 1)[1].replace("``", "'"),
    )
    add_dataset_args(p)
    p.add_argument(
        "--val-data-root", type=Path, default=None, metavar="DIR",
        help="validation photographs, with --val-mask-dir: the epoch with the best PxAP on them "
        "is kept (select_by='pxap'); --label and --mask-threshold apply to them too",
    )
    add_mask_folder_args(p, prefix="val-", what="with --val-data-root: ")
    add_model_args(p)
    p.add_argument(
        "--cam",
        type=cam_name,
        default="gradcampp",
        metavar="NAME",
        help="seed CAM method (default gradcampp)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="F-CAM file to write")
    p.add_argument("--epochs", type=positive_int, default=10, metavar="N", help="default 10")
    p.add_argument(
        "--lr", type=positive_float, default=None,
        help="SGD learning rate (the first epoch's with the cosine schedule; default: fit's, 0.03)",
    )
    p.add_argument(
        "--lr-schedule", choices=CLI_LR_SCHEDULES, default=None,
        help="learning rate per epoch: cosine-annealed over --epochs, or constant as published "
        "(default: fit's, cosine)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="N", help="default 0")
    p.add_argument("--crf-weight", type=positive_float, metavar="W", help="F-CAM CRF weight")
    p.add_argument(
        "--colour-bins", type=non_negative_int, metavar="N",
        help="levels per colour channel of the histograms seed candidates must agree with; "
        "0: seeds from the CAM alone (default: F-CAM's)",
    )
    p.add_argument(
        "--colour-mode", choices=CLI_COLOUR_MODES, default=None,
        help="draw seeds in proportion to their colour agreement (weight) or drop the "
        "candidates that disagree (filter) (default: F-CAM's, weight)",
    )
    add_map_args(p, "", " (stored in --out)")
    p.add_argument(
        "--no-class-head", action="store_true",
        help="F-CAM's published class-agnostic decoder head instead of the default head with a "
        "residual per class (class_head=False)",
    )
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        metavar="DIR",
        help="per-epoch checkpoints (default: <out without suffix>-checkpoints/)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir"
    )
    p.add_argument(
        "--use-predictions",
        action="store_true",
        help="seed CAMs for the predicted class instead of the dataset's labels",
    )
    add_common(p)
    p.set_defaults(func=run)


class _Batches:
    """Dict batches for :meth:`fcam.FCAM.fit` (labels dropped with ``--use-predictions``)."""

    def __init__(self, loader: Any, keep_labels: bool) -> None:
        self.loader, self.keep_labels = loader, keep_labels

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        keys = ("image", "raw", "label") if self.keep_labels else ("image", "raw")
        for batch in self.loader:
            yield {k: batch[k] for k in keys if k in batch}


def _check_labels(dataset: Any, num_classes: int | None) -> None:
    classes = getattr(dataset, "classes", None)
    if num_classes is not None and classes is not None and len(classes) > num_classes:
        raise UserError(
            f"--data-root has {len(classes)} class folders but the classifier has "
            f"{num_classes} classes; fix the folders or pass --use-predictions"
        )


def run(args: argparse.Namespace) -> int:
    """Run ``fcam fit``; returns the exit status."""
    import torch
    from torch.utils.data import DataLoader

    from fcam import FCAM
    from fcam.data import wsol_collate

    if (args.val_data_root is None) != (args.val_mask_dir is None):
        raise UserError("--val-data-root and --val-mask-dir go together (photographs and masks)")
    model, spec = load_classifier_args(args)
    dataset = open_dataset(args, spec, return_raw=True)
    val_loader = None
    if args.val_data_root is not None:
        val_loader = DataLoader(
            open_mask_folder(args.val_data_root, args.val_mask_dir, args, spec, prefix="val-"),
            batch_size=args.batch_size, collate_fn=wsol_collate, num_workers=args.workers,
            **device_loading(model),
        )
    if not args.use_predictions:
        _check_labels(dataset, spec.num_classes)
    if len(dataset) == 0:
        raise UserError(f"--data-root: no images in {args.data_root}")
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=len(dataset) > args.batch_size,
        collate_fn=wsol_collate,
        num_workers=args.workers,
        generator=torch.Generator().manual_seed(args.seed),
        **device_loading(model),
    )
    options: dict[str, Any] = {"mean": spec.mean, "std": spec.std, "seed": args.seed}
    # Options left unset on the command line keep F-CAM's own defaults.
    for name in ("crf_weight", "cam_exponent", "cam_mix", "colour_bins", "colour_mode"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.no_class_head:
        options["class_head"] = False
    with user_input("F-CAM for this classifier"):
        fc = FCAM(model, target_layer=spec.target_layer, cam=args.cam, **options)
    ckpt_dir = args.checkpoint_dir or args.out.with_name(args.out.stem + "-checkpoints")
    torch.manual_seed(args.seed)
    history = fc.fit(
        _Batches(loader, keep_labels=not args.use_predictions),
        epochs=args.epochs,
        device=args.device,
        checkpoint_dir=make_dir(ckpt_dir, "--checkpoint-dir"),
        resume=args.resume,
        progress=not args.no_progress,
        val_loader=val_loader,
        **{k: v for k, v in (("lr", args.lr), ("lr_schedule", args.lr_schedule)) if v is not None},
    )
    fc.history = list(history)  # a resumed run that had finished every epoch keeps its history
    if not fc.fitted:  # --resume of a run that had already finished every epoch
        from fcam.explainer import CHECKPOINT_NAME

        with user_input("--resume"):
            fc = FCAM.load(ckpt_dir / CHECKPOINT_NAME, model)
    make_dir(args.out.parent, "--out")
    fc.save(args.out)  # atomic, through fcam.core.io
    if history:
        print(f"epoch {len(history)}/{args.epochs}: loss {history[-1]['loss']:.4f}")
    if history and val_loader is not None:
        best = max(range(len(history)), key=lambda e: history[e]["val_pxap"])
        print(f"kept epoch {best + 1} (validation PxAP {history[best]['val_pxap']:.1f})")
    print(f"wrote {args.out} (checkpoints in {ckpt_dir})")
    return 0
