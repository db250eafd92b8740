"""Classifiers, map producers and datasets built from the command line.

* :func:`add_model_args` / :func:`load_classifier_args`: ``--classifier FILE`` (an fcam
  classifier file, e.g. the demo's ``classifier.pt``) or ``--model NAME|pkg.mod:callable``
  with ``--weights``, ``--num-classes``; plus ``--target-layer``, ``--size``, ``--mean``,
  ``--std`` that override what the classifier file says;
* :class:`MapSource`: maps at input size from a fitted F-CAM (``--checkpoint``) or a CAM
  extractor (``--cam``, the interpolated CAM of :func:`fcam.evaluation.cam_map_fn`);
* :func:`open_dataset`: an ``ImageFolder``, a wsolevaluation-layout split or a folder of
  photographs with figure/ground masks (:func:`open_mask_folder`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from fcam.commands.common import MAX_SIZE, UserError, float_list, positive_int, size_int, user_input

logger = logging.getLogger(__name__)


def add_model_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The classifier options shared by ``explain``, ``evaluate``, ``fit``, ``export`` and
    ``app`` (where they are optional: without them it opens on the demo's classifier)."""
    g = p.add_argument_group("classifier (--classifier FILE, or --model NAME [--weights FILE])")
    which = g.add_mutually_exclusive_group(required=required)
    which.add_argument(
        "--classifier",
        type=Path,
        metavar="FILE",
        help="fcam classifier file (fcam.models.save_classifier, or the demo's classifier.pt)",
    )
    which.add_argument(
        "--model",
        metavar="NAME",
        help="torchvision builder name (resnet50, vgg16, efficientnet_b0, ...) or "
        "'package.module:callable' returning an nn.Module",
    )
    g.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="with --model: a state_dict file, or a checkpoint holding one under "
        "'state_dict'/'model_state_dict'/'model' ('module.' prefixes are stripped)",
    )
    g.add_argument(
        "--num-classes",
        type=positive_int,
        metavar="N",
        help="with --model: number of classes (default: read from --weights)",
    )
    g.add_argument(
        "--target-layer",
        metavar="NAME",
        help="dotted name of the CAM layer, e.g. layer4 or features.28 "
        "(default: the classifier file's, else the last layer with a spatial output)",
    )
    g.add_argument(
        "--size",
        type=size_int,
        metavar="PX",
        help=f"input side in pixels, at most {MAX_SIZE} (default: the classifier file's input "
        "size, else 224)",
    )
    g.add_argument(
        "--mean",
        type=float_list,
        metavar="M,M,M",
        help="normalisation mean, comma-separated (default: the file's, else ImageNet's)",
    )
    g.add_argument(
        "--std",
        type=float_list,
        metavar="S,S,S",
        help="normalisation std, comma-separated (default: the file's, else ImageNet's)",
    )


def _spec_from_args(args: argparse.Namespace) -> Any:
    from fcam.models import ClassifierSpec

    with user_input("--model"):
        return ClassifierSpec(args.model, num_classes=args.num_classes)


def load_classifier_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """The classifier and its :class:`~fcam.models.ClassifierSpec` (with the overrides).

    Returns:
        ``(model in eval mode with frozen parameters, spec)``.

    Raises:
        UserError: missing or unreadable files, bad names, mismatching weights.
    """
    from fcam.models import load_classifier, load_model

    if args.classifier is not None:
        for option in ("weights", "num_classes"):
            if getattr(args, option) is not None:
                flag = "--" + option.replace("_", "-")
                raise UserError(f"{flag} goes with --model, not with --classifier")
        with user_input("--classifier"):
            model, spec = load_classifier(args.classifier, device=args.device)
    else:
        spec = _spec_from_args(args)
        with user_input("--weights" if args.weights is not None else "--model"):
            model, spec = load_model(spec, args.weights, device=args.device)
    overrides = {
        key: getattr(args, option)
        for option, key in (
            ("target_layer", "target_layer"),
            ("size", "input_size"),
            ("mean", "mean"),
            ("std", "std"),
        )
        if getattr(args, option) is not None
    }
    with user_input("--mean/--std" if {"mean", "std"} & set(overrides) else "classifier"):
        spec = dataclasses.replace(spec, **overrides)
    from fcam.core import check_stats, first_conv_channels

    with user_input("--mean/--std"):
        check_stats(spec.mean, spec.std, first_conv_channels(model))
    model.requires_grad_(False)
    logger.info("classifier: %s", spec)
    return model, spec


class MapSource:
    """Maps at input size for ``(images, targets)``, from ``--checkpoint`` or ``--cam``.

    Use as a context manager (the extractor's hooks are removed on exit).

    Attributes:
        label: a display name (``"F-CAM (fcam.pt)"`` or ``"gradcampp (interpolated)"``).
    """

    def __init__(
        self, model: Any, spec: Any, checkpoint: Path | None, cam: str | None,
        cam_exponent: float | None = None, cam_mix: float | None = None,
    ) -> None:
        self.explainer: Any = None
        self.extractor: Any = None
        overrides = {name: value for name, value in
                     (("cam_exponent", cam_exponent), ("cam_mix", cam_mix)) if value is not None}
        if checkpoint is None and overrides:
            flags = " and ".join("--" + name.replace("_", "-") for name in overrides)
            raise UserError(f"{flags} shape an F-CAM map: it needs --checkpoint, not --cam")
        if checkpoint is not None:
            from fcam import FCAM

            if not checkpoint.is_file():
                raise UserError(f"F-CAM checkpoint not found: {checkpoint}")
            with user_input("--checkpoint"):
                self.explainer = FCAM.load(checkpoint, model, **overrides)
            self.label = f"F-CAM ({checkpoint.name})"
        else:
            from fcam.cams import create

            layer = f" --target-layer {spec.target_layer}" if spec.target_layer else ""
            with user_input(f"--cam {cam}{layer}"):
                self.extractor = create(str(cam), model, spec.target_layer)
            self.label = f"{cam} (interpolated)"

    def map_fn(self) -> Any:
        """The :data:`fcam.evaluation.MapFn` of this source."""
        from fcam.evaluation import cam_map_fn, fcam_map_fn

        if self.explainer is not None:
            return fcam_map_fn(self.explainer)
        return cam_map_fn(self.extractor)

    def __enter__(self) -> MapSource:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.extractor is not None:
            self.extractor.remove_hooks()


class ImageTransform:
    """PIL image -> normalised float tensor at ``size x size`` (bilinear, no crop)."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.size, self.mean, self.std = size, mean, std

    def raw(self, image: Any) -> Any:
        """The resized uint8 ``(3, S, S)`` tensor."""
        import numpy as np
        import torch
        from PIL import Image

        resized = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1).contiguous()

    def normalise(self, raw: Any) -> Any:
        """``(raw / 255 - mean) / std``; the luma for a grey classifier (one-value stats)."""
        from fcam.core.normalisation import normalise_raw

        return normalise_raw(raw, self.mean, self.std)

    def __call__(self, image: Any) -> Any:
        return self.normalise(self.raw(image))


def read_image(path: Path) -> Any:
    """An RGB PIL image; :class:`UserError` for a missing or unreadable file."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise UserError(f"not a readable image file: {path}") from None


def open_mask_folder(root: Path, mask_dir: Path, args: argparse.Namespace, spec: Any,
                     prefix: str = "") -> Any:
    """A :class:`fcam.data.MaskFolder` of the photographs in ``root`` and the masks in
    ``mask_dir`` (``--label``, ``--mask-threshold``); items also carry ``image_id`` (the stem).

    Raises:
        UserError: naming the option and the file (see :class:`fcam.data.MaskFolder`).
    """
    from fcam.data import MaskFolder

    if not root.is_dir():
        raise UserError(f"--{prefix}data-root: folder not found: {root}")
    with user_input(f"--{prefix}mask-dir"):
        folder = MaskFolder(root, images=".", masks=mask_dir.resolve(), size=spec.size,
                            mean=spec.mean, std=spec.std, label=args.label,
                            threshold=args.mask_threshold)
    return _Named(folder, f"--{prefix}mask-dir")


class _Named:
    """MaskFolder items with ``image_id`` = ``name`` too (what the command outputs are named
    by), and their ``ValueError`` about a file reported as a :class:`UserError`."""

    def __init__(self, folder: Any, option: str) -> None:
        self.folder, self.option = folder, option
        self.image_ids = list(folder.names)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with user_input(self.option):
            item = self.folder[index]
        item["image_id"] = item["name"]
        return item


def open_dataset(args: argparse.Namespace, spec: Any, *, return_raw: bool = False) -> Any:
    """The ``--data-root`` dataset: a wsolevaluation split with ``--metadata``, a folder of
    photographs and masks with ``--mask-dir``, else an ``ImageFolder``. Items are dicts with
    ``image``, ``label`` (not for a mask folder without ``--label``), ``image_id`` (and ``raw``
    with ``return_raw`` or a mask folder, ground truth for wsolevaluation splits and mask
    folders).

    Raises:
        UserError: missing folders, malformed metadata, no images.
    """
    if not args.data_root.is_dir():
        raise UserError(f"--data-root: folder not found: {args.data_root}")
    if args.mask_dir is not None:
        if args.metadata is not None:
            raise UserError("--mask-dir and --metadata are two layouts: give one of them")
        return open_mask_folder(args.data_root, args.mask_dir, args, spec)
    if getattr(args, "val_mask_dir", None) is None and args.label is not None:
        raise UserError("--label goes with --mask-dir (or --val-mask-dir)")
    if args.metadata is not None:
        from fcam.data import WSOLDataset

        if not args.metadata.is_dir():
            raise UserError(f"--metadata: metadata folder not found: {args.metadata}")
        with user_input("--metadata"):
            return WSOLDataset(
                args.data_root,
                args.metadata,
                mask_root=args.mask_root,
                size=spec.size,
                num_classes=spec.num_classes,
                return_raw=return_raw,
                mean=spec.mean,
                std=spec.std,
            )
    return FolderDataset(args.data_root, ImageTransform(spec.size, spec.mean, spec.std), return_raw)


class FolderDataset:
    """A torchvision ``ImageFolder`` whose items are dicts like :class:`fcam.data.WSOLDataset`'s
    (``image_id`` is the path relative to the root)."""

    def __init__(self, root: Path, transform: ImageTransform, return_raw: bool) -> None:
        from torchvision.datasets import ImageFolder

        with user_input("--data-root"):
            self.folder = ImageFolder(str(root))
        self.root, self.transform, self.return_raw = root, transform, return_raw
        self.classes = list(self.folder.classes)
        self.image_ids = [Path(p).relative_to(root).as_posix() for p, _ in self.folder.samples]

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.folder.samples[index]
        raw = self.transform.raw(read_image(Path(path)))
        item = {
            "image": self.transform.normalise(raw),
            "label": int(label),
            "index": int(index),
            "image_id": self.image_ids[index],
        }
        if self.return_raw:
            item["raw"] = raw
        return item
