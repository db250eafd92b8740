"""``fcam explain``: overlays (and optionally raw maps) of F-CAM or CAM maps for image files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fcam.commands.common import (
    UserError,
    add_common,
    add_method_args,
    make_dir,
    write_npy,
)
from fcam.commands.sources import (
    ImageTransform,
    MapSource,
    add_model_args,
    load_classifier_args,
    read_image,
)
from fcam.core.io import atomic_write_png as write_png


def register(sub: Any) -> None:
    """Add the ``explain`` sub-command to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "explain",
        help="write F-CAM (or CAM) overlays for image files",
        description=(
            "Write one overlay PNG per image, <out>/<stem>-class<k>.png (and the raw map as "
            ".npy with --save-maps). Images are resized to --size x --size (no crop)."
        ),
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    add_model_args(p)
    add_method_args(p)
    p.add_argument("--out", type=Path, required=True, help="output folder for the overlays")
    p.add_argument(
        "--target", type=int, default=None, help="class to explain (default: the predicted class)"
    )
    p.add_argument("--save-maps", action="store_true", help="also write the maps as .npy")
    add_common(p)
    p.set_defaults(func=run)


def _predict(model: Any, images: Any, target: int | None) -> tuple[int, float]:
    import torch

    from fcam.core import frozen, model_logits

    with frozen(model), torch.no_grad():
        probs = model_logits(model(images)).softmax(1)
    num_classes = int(probs.shape[1])
    if target is not None and not 0 <= target < num_classes:
        raise UserError(f"--target must be in [0, {num_classes}), got {target}")
    chosen = int(probs.argmax(1)) if target is None else target
    return chosen, float(probs[0, chosen])


def run(args: argparse.Namespace) -> int:
    """Run ``fcam explain``; prints one line per image and returns the exit status."""
    import torch

    from fcam.core import model_device
    from fcam.viz import overlay

    pil_images = [read_image(p) for p in args.images]  # fail before any heavy work
    model, spec = load_classifier_args(args)
    device = model_device(model)
    transform = ImageTransform(spec.size, spec.mean, spec.std)
    with MapSource(model, spec, args.checkpoint, args.cam, args.cam_exponent,
                   args.cam_mix) as source:
        map_fn = source.map_fn()
        make_dir(args.out, "--out")
        for path, pil in zip(args.images, pil_images):
            raw = transform.raw(pil)
            images = transform.normalise(raw)[None].to(device)
            target, prob = _predict(model, images, args.target)
            heat = map_fn(images, torch.tensor([target], device=device))[0].float().cpu()
            stem = args.out / f"{path.stem}-class{target}"
            write_png(stem.with_suffix(".png"), overlay(raw, heat))
            if args.save_maps:
                write_npy(stem.with_suffix(".npy"), heat.numpy())
            print(f"{path} -> {stem.with_suffix('.png')} (class {target}, p={prob:.2f})")
    return 0
