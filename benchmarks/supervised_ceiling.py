"""What F-CAM's decoder reaches with full masks: the fully-supervised reference of robustness.py.

For each domain of ``benchmarks/robustness.py`` (same classifiers, same 192 training images,
same 60 test images), F-CAM's decoder is trained on the frozen classifier's features with the
**ground-truth mask of every training image** (:func:`fcam.wsol.fsl_baseline` with the class
head, ``k`` = all images, SGD 0.03 annealed with a cosine over 40 epochs). It reads the same
features as F-CAM and is conditioned on the labelled class as F-CAM is, so its PxAP is what
this decoder can do on these features when the weak labels are replaced by perfect masks:
the yardstick for robustness.py's "+15 / +25 over the CAM" figures.

Prints, per domain, the PxAP / MaxBoxAccV2 of the interpolated Grad-CAM++ (F-CAM's seed CAM;
it matches robustness.py's CAM column), of the supervised decoder alone, and of the supervised
decoder with the same 2 % share of the CAM that F-CAM's default map has.

Usage::

    python benchmarks/supervised_ceiling.py --threads 2                 # nine domains, ~45 min
    python benchmarks/supervised_ceiling.py --domains photo112-s8 photo96-small
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from robustness import DOMAINS, Domain, classifier, script_logging
from torch.utils.data import DataLoader

from fcam.cams import create
from fcam.explainer import DEFAULT_CAM_MIX
from fcam.explainer.fcam import mix_with_cam
from fcam.metrics import maxboxacc, pxap
from fcam.wsol import fsl_baseline


def run_domain(domain: Domain, epochs: int, lr: float, n_train: int, n_test: int,
               device: torch.device) -> dict[str, Any]:
    model, acc = classifier(domain, device)
    train, test = domain.data(n_train, "train"), domain.data(n_test, "test")
    tic = time.time()
    sup = fsl_baseline(model, train, "features", k=n_train, epochs=epochs, lr=lr, batch_size=8,
                       lr_schedule="cosine", class_head=True, progress=False)
    seconds = time.time() - tic
    probs, cams, masks, boxes = [], [], [], []
    with create("gradcampp", model, target_layer="features") as extractor:
        for batch in DataLoader(test, batch_size=50):
            images, labels = batch["image"].to(device), batch["label"].to(device)
            probs.append(sup.explain(images, targets=labels).cpu())
            cams.append(extractor.explain(images, targets=labels).cpu())
            masks.append(batch["mask"])
            boxes += [b[None].numpy() for b in batch["box"]]
    prob, cam, mask = torch.cat(probs), torch.cat(cams), torch.cat(masks)
    mixed = mix_with_cam(prob, cam, 0.0, DEFAULT_CAM_MIX)
    row: dict[str, Any] = {"domain": domain.name, "tuned": domain.tuned, "acc": acc,
                           "train_s": round(seconds)}
    for tag, maps in (("cam", cam), ("sup", prob), ("sup_mix", mixed)):
        row[f"{tag}_pxap"] = pxap(maps, mask)
        row[f"{tag}_box"] = maxboxacc(maps, boxes, cam_curve_interval=0.01)
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", nargs="*", default=list(DOMAINS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--n-train", type=int, default=192)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.domains:
        torch.manual_seed(0)
        row = run_domain(DOMAINS[name], args.epochs, args.lr, args.n_train, args.n_test, device)
        rows.append(row)
        print("ROW", json.dumps(row), flush=True)
    print()
    print("| domain | split | CAM PxAP / BoxV2 | full masks: decoder PxAP / BoxV2 | "
          "full masks, map with 2 % CAM PxAP / BoxV2 | train s |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['domain']} | {'tuned' if r['tuned'] else 'held out'} | "
              f"{r['cam_pxap']:.1f} / {r['cam_box']:.1f} | {r['sup_pxap']:.1f} / {r['sup_box']:.1f} | "
              f"{r['sup_mix_pxap']:.1f} / {r['sup_mix_box']:.1f} | {r['train_s']} |")
    return rows


if __name__ == "__main__":
    script_logging()
    main()
