"""F-CAM across domains: interpolated CAM vs F-CAM (defaults) vs F-CAM with val_loader selection.

Each domain is a :class:`fcam.data.synthetic_domains.SyntheticDomainWSOL` setting (background
kind, image size, object scale, distractors) paired with a small classifier trained from scratch
(a plain CNN whose stride and training length set the CAM size and the classifier's strength).
Classifiers are cached under ``<fcam cache dir>/robustness/``. For every domain the script
prints the PxAP and MaxBoxAccV2 on held-out test images of

* the interpolated seed CAM (``FCAM.explain(..., return_cam=True)``),
* F-CAM with default settings (``FCAM(model, layer).fit(loader)``),
* F-CAM with ``fit(..., val_loader=...)`` selection (10 masked images per class, a separate
  ``val`` split).

Domains marked ``tuned`` are the only ones the defaults were chosen on; all others are held out.

Usage::

    python benchmarks/robustness.py --threads 2          # all nine domains, fit's 10 epochs (~20 min)
    python benchmarks/robustness.py --domains photo160   # one domain
    python benchmarks/robustness.py --domains texture64 photo80 --epochs 3 --no-select \
        --options '{"crf_weight": 3e-9}' --fit-options '{"lr": 0.03}'        # an experiment
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cached_training import load_or_train
from torch import nn
from torch.utils.data import DataLoader, Subset

from fcam import FCAM
from fcam.data.synthetic_domains import SyntheticDomainWSOL
from fcam.demo.cache import cache_dir, config_key
from fcam.metrics import maxboxacc, pxap

logger = logging.getLogger("robustness")


class SmallCNN(nn.Module):
    """Plain CNN: a stride-2 stem, then ``stages`` stride-2 blocks; CAM layer ``features``.

    Output stride ``2 ** (stages + 1)``; the last block (``features``) is the CAM target layer.
    """

    def __init__(self, stages: int, width: int = 32, num_classes: int = 5) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            )

        widths = [width * 2 ** min(i, 3) for i in range(stages + 1)]
        self.stem = block(3, widths[0], 2)
        self.body = nn.Sequential(*[block(widths[i], widths[i + 1], 2) for i in range(stages - 1)])
        self.features = block(widths[stages - 1], widths[stages], 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[stages], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(self.body(self.stem(x)))).flatten(1))


@dataclass(frozen=True)
class Domain:
    """A data domain plus the classifier trained on it."""

    name: str
    size: int
    background: str = "texture"
    object_scale: tuple[float, float] = (0.17, 0.36)
    distractors: tuple[int, int] = (2, 5)
    stages: int = 3            # classifier output stride 2 ** (stages + 1)
    clf_epochs: int = 8        # classifier strength
    clf_width: int = 16
    n_clf: int = 1000          # classifier training images
    tuned: bool = False

    def data(self, n: int, split: str) -> SyntheticDomainWSOL:
        return SyntheticDomainWSOL(n, size=self.size, seed=0, split=split,
                                   background=self.background, object_scale=self.object_scale,
                                   distractors=self.distractors)

    @property
    def cam_side(self) -> int:
        return self.size // 2 ** (self.stages + 1)


DOMAINS = {d.name: d for d in (
    # Tuned on (the only domains any default was chosen on):
    Domain("texture64", 64, "texture", stages=2, tuned=True),                 # 8×8 CAM
    Domain("photo80", 80, "photo", stages=3, tuned=True),                     # 5×5 CAM
    # Held out:
    Domain("texture64-plain", 64, "texture", (0.2, 0.4), (0, 0), stages=3),   # 4×4 CAM
    Domain("photo96-small", 96, "photo", (0.09, 0.18), stages=2),             # 12×12 CAM
    Domain("photo112-s8", 112, "photo", (0.12, 0.3), stages=2),               # 14×14 CAM
    Domain("photo128-weak", 128, "photo", stages=4, clf_epochs=3),            # 4×4 CAM, weak clf
    Domain("texture128", 128, "texture", stages=3),                           # 8×8 CAM
    Domain("photo160", 160, "photo", stages=4),                               # 5×5 CAM
    Domain("photo224", 224, "photo", stages=4, n_clf=600),                    # 7×7 CAM
)}


def classifier(domain: Domain, device: torch.device) -> tuple[nn.Module, float]:
    """The domain's classifier, trained once and cached; returns (model, test accuracy %)."""
    spec = {k: v for k, v in dataclasses.asdict(domain).items() if k not in ("name", "tuned")}
    path = cache_dir() / "robustness" / f"{config_key({**spec, 'v': 1})}.pt"
    model = SmallCNN(domain.stages, domain.clf_width).to(device)

    def train() -> dict[str, Any]:
        torch.manual_seed(0)
        loader = DataLoader(domain.data(domain.n_clf, "train"), batch_size=32, shuffle=True, drop_last=True)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=domain.clf_epochs * len(loader))
        tic = time.time()
        for _ in range(domain.clf_epochs):
            model.train()
            for batch in loader:
                images = batch["image"].to(device)
                flip = torch.rand(images.shape[0]) < 0.5
                images[flip] = images[flip].flip(-1)
                loss = nn.functional.cross_entropy(model(images), batch["label"].to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        model.eval()
        test = domain.data(300, "test")
        correct = 0
        with torch.no_grad():
            for batch in DataLoader(test, batch_size=100):
                correct += int((model(batch["image"].to(device)).argmax(1).cpu() == batch["label"]).sum())
        acc = 100.0 * correct / len(test)
        logger.info("%s: classifier trained in %.0fs, accuracy %.1f%%", domain.name, time.time() - tic, acc)
        return {"acc": acc}

    acc = float(load_or_train(model, path, train)["acc"])
    return model.eval(), acc


def _val_loader(domain: Domain, per_class: int) -> DataLoader:
    val = domain.data(5 * per_class, "val")
    return DataLoader(val, batch_size=25,
                      collate_fn=lambda items: (torch.stack([i["image"] for i in items]),
                                                torch.tensor([i["label"] for i in items]),
                                                torch.stack([i["mask"] for i in items]).long()))


def evaluate(fc: FCAM, test: SyntheticDomainWSOL, device: torch.device,
             want_cam: bool = False) -> dict[str, Any]:
    maps, cams, masks, boxes = [], [], [], []
    for batch in DataLoader(test, batch_size=50):
        m, c = fc.explain(batch["image"].to(device), targets=batch["label"], return_cam=True)
        maps.append(m.cpu()); cams.append(c.cpu()); masks.append(batch["mask"])
        boxes += [b[None].numpy() for b in batch["box"]]
    maps_t, cams_t, masks_t = torch.cat(maps), torch.cat(cams), torch.cat(masks)
    out = {"pxap": pxap(maps_t, masks_t), "box": maxboxacc(maps_t, boxes, cam_curve_interval=0.01),
           "fg": float((maps_t > 0.5).float().mean()), "gt_fg": float(masks_t.float().mean()),
           "maps": maps_t}
    if want_cam:
        out.update(cam_pxap=pxap(cams_t, masks_t), cam_box=maxboxacc(cams_t, boxes, cam_curve_interval=0.01),
                   cams=cams_t)
    return out


def run_domain(domain: Domain, options: dict[str, Any], n_train: int, epochs: int, n_test: int,
               select: bool, device: torch.device, picture: Path | None = None,
               fit_options: dict[str, Any] | None = None, distinct: int | None = None) -> dict[str, Any]:
    model, acc = classifier(domain, device)
    test = domain.data(n_test, "test")
    train = domain.data(n_train, "train")
    # --distinct K: the first K training images repeated to fill n_train (few images per class).
    indices = [i % (distinct or n_train) for i in range(n_train)]
    row: dict[str, Any] = {"domain": domain.name, "tuned": domain.tuned, "acc": acc,
                           "cam": f"{domain.cam_side}x{domain.cam_side}"}
    runs = [("default", None)] + ([("select", _val_loader(domain, 10))] if select else [])
    for tag, val in runs:
        torch.manual_seed(0)
        loader = DataLoader(Subset(train, indices), batch_size=16, shuffle=True, drop_last=True)
        fc = FCAM(model, "features", **options)
        tic = time.time()
        hist = fc.fit(loader, epochs=epochs, device=device, progress=False, val_loader=val,
                      **(fit_options or {}))
        res = evaluate(fc, test, device, want_cam=tag == "default")
        if tag == "default":
            row.update(cam_pxap=res["cam_pxap"], cam_box=res["cam_box"], gt_fg=res["gt_fg"])
            cams = res["cams"]
        row.update({f"{tag}_pxap": res["pxap"], f"{tag}_box": res["box"], f"{tag}_fg": res["fg"],
                    f"{tag}_s": round(time.time() - tic)})
        if tag == "select":
            row["select_epoch"] = int(np.argmax([h["val_pxap"] for h in hist])) + 1
        row[f"{tag}_hist_fg"] = [round(h["fg_share"], 3) for h in hist]
        if picture is not None and tag == "default":
            _picture(test, cams, res["maps"], picture)
    return row


def _picture(test: SyntheticDomainWSOL, cams: torch.Tensor, maps: torch.Tensor, path: Path) -> None:
    from PIL import Image

    k = 8
    raw = np.concatenate([test[i]["raw"].permute(1, 2, 0).numpy() for i in range(k)], 1)

    def gray(x: torch.Tensor) -> np.ndarray:
        return np.repeat((x.numpy()[..., None] * 255).astype(np.uint8), 3, -1)

    rows = [raw, np.concatenate([gray(test[i]["mask"].float()) for i in range(k)], 1),
            np.concatenate([gray(cams[i]) for i in range(k)], 1),
            np.concatenate([gray(maps[i]) for i in range(k)], 1)]
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", nargs="*", default=list(DOMAINS))
    parser.add_argument("--options", default="{}", help="JSON FCAM options (experiments)")
    parser.add_argument("--fit-options", default="{}", help="JSON FCAM.fit options, e.g. lr")
    parser.add_argument("--n-train", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=10, help="F-CAM epochs (default: fit's own, 10)")
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--distinct", type=int, default=None,
                        help="repeat the first K training images to fill --n-train (few images per class)")
    parser.add_argument("--no-select", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pictures", type=Path, default=None, help="folder for map pictures")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    options = json.loads(args.options)
    rows = []
    for name in args.domains:
        domain = DOMAINS[name]
        pic = None
        if args.pictures is not None:
            args.pictures.mkdir(parents=True, exist_ok=True)
            pic = args.pictures / f"{name}.png"
        row = run_domain(domain, options, args.n_train, args.epochs, args.n_test,
                         not args.no_select, device, pic, json.loads(args.fit_options), args.distinct)
        rows.append(row)
        print("ROW", json.dumps(row), flush=True)
    print()
    print("| domain | split | clf acc | CAM | CAM PxAP / BoxV2 | F-CAM default PxAP / BoxV2 | "
          "F-CAM select PxAP / BoxV2 |")
    print("|---|---|---:|---|---:|---:|---:|")
    for r in rows:
        sel = (f"{r['select_pxap']:.1f} / {r['select_box']:.1f}" if "select_pxap" in r else "–")
        print(f"| {r['domain']} | {'tuned' if r['tuned'] else 'held out'} | {r['acc']:.0f} | {r['cam']} | "
              f"{r['cam_pxap']:.1f} / {r['cam_box']:.1f} | {r['default_pxap']:.1f} / "
              f"{r['default_box']:.1f} | {sel} |")
    return rows


def script_logging() -> None:
    """This script's progress lines on stderr; fcam's own INFO lines (per-epoch) silenced."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("fcam").setLevel(logging.WARNING)


if __name__ == "__main__":
    script_logging()
    main()
