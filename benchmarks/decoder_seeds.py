"""Benchmark: F-CAM decoders across initialisation seeds (does a decoder train reliably?).

For each configuration, the demo's classifier (resnet18 trained from scratch on the embedded
synthetic set, cached) is explained with Grad-CAM++ seeds; F-CAM is fitted once per decoder
(``--upscalers``) and per seed (``FCAM(..., seed=s)``: decoder initialisation and seed sampling)
with default settings, then scored (PxAP, MaxBoxAccV2; thresholds every 0.01) on the test split.
A run whose maps collapse or invert shows up as PxAP near or below the interpolated CAM's,
which is printed on the first line of each configuration.

Configurations:

* ``A``: the ``--quick`` demo classifier (128 px, data seed 0), 256 images × 4 epochs, batch 8
  (128 SGD steps). The light decoder's design was looked at on this one.
* ``B``: the full demo's classifier (128 px, 1,500 images, 6 epochs) with the demo's F-CAM
  budget, 600 images × 3 epochs, batch 16 (114 steps), 300 test images. Held out: run once,
  after the design was fixed.

Usage::

    python benchmarks/decoder_seeds.py --configs A B --upscalers unet unet-lite --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.data import DataLoader, Subset

from fcam import FCAM
from fcam.cams import create
from fcam.data import SyntheticWSOL
from fcam.demo import DemoConfig, train_classifier
from fcam.evaluation import cam_map_fn, evaluate_localization, fcam_map_fn

CONFIGS = {
    "A": {"demo": {}, "quick": True, "n_fit": 256, "epochs": 4, "batch": 8, "n_test": 100},
    "B": {"demo": {}, "quick": False, "n_fit": 600, "epochs": 3, "batch": 16, "n_test": 300},
}


def run_config(name: str, upscalers: list[str], seeds: list[int], device: str) -> list[dict]:
    spec = CONFIGS[name]
    demo = (DemoConfig.quick if spec["quick"] else DemoConfig)(**spec["demo"])
    clf = demo.classifier_config()
    model = train_classifier(clf, device=device, progress=False).eval()
    train = SyntheticWSOL(clf.n_train, size=clf.image_size, seed=clf.data_seed, split="train")
    test = SyntheticWSOL(spec["n_test"], size=clf.image_size, seed=clf.data_seed, split="test")
    test_loader = DataLoader(test, batch_size=50)
    with create("gradcampp", model, "layer4") as ext:
        base = evaluate_localization(cam_map_fn(ext), model, test_loader, progress=False,
                                     cam_curve_interval=0.01)
    rows = [{"config": name, "upscaler": "Grad-CAM++ (interpolated)", "seed": None,
             "pxap": base.pxap, "boxv2": base.maxboxacc_v2}]
    print(f"{name}: {clf.image_size} px, Grad-CAM++ alone PxAP {base.pxap:.1f} "
          f"BoxV2 {base.maxboxacc_v2:.1f}", flush=True)
    for upscaler in upscalers:
        for seed in seeds:
            loader = DataLoader(Subset(train, range(spec["n_fit"])), batch_size=spec["batch"],
                                shuffle=True, generator=torch.Generator().manual_seed(0))
            tic = time.perf_counter()
            fc = FCAM(model, "layer4", cam="gradcampp", upscaler=upscaler, seed=seed)
            fc.fit(loader, epochs=spec["epochs"], progress=False, device=device)
            fit_s = time.perf_counter() - tic
            s = evaluate_localization(fcam_map_fn(fc), model, test_loader, progress=False,
                                      cam_curve_interval=0.01)
            row = {"config": name, "upscaler": upscaler, "seed": seed, "pxap": s.pxap,
                   "boxv2": s.maxboxacc_v2, "fg_share": fc.history[-1]["fg_share"],
                   "fit_s": fit_s}
            rows.append(row)
            print(f"{name} {upscaler:9s} seed {seed}: PxAP {s.pxap:5.1f} BoxV2 {s.maxboxacc_v2:5.1f} "
                  f"foreground {100 * row['fg_share']:.0f} % fit {fit_s:.0f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["A", "B"], choices=sorted(CONFIGS))
    parser.add_argument("--upscalers", nargs="+", default=["unet", "unet-lite"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [r for c in args.configs for r in run_config(c, args.upscalers, args.seeds, args.device)]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
