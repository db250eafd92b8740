"""Training-step time of WSOL methods against plain CE ("cam"), in one process, alternated.

Every method is built on the same backbone (wsol_table's setting by default: resnet18 cut at
layer3, SyntheticWSOL images at 64 px, batch 32) and one SGD step
(:func:`fcam.wsol.train_step`) of each is timed round after round on the same batch; the
median per method and its overhead against ``cam`` are printed. SPOL is timed in both of its
stages (``spol:cam``, ``spol:seg``; the segmentation stage also runs the frozen class net and
the pseudo masks of the batch).

Usage::

    python benchmarks/wsol_step_overhead.py --methods spol,cstn --rounds 8
    python benchmarks/wsol_step_overhead.py --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
import torchvision
from torch.utils.data import DataLoader

from fcam.core.io import atomic_write_text
from fcam.data import SyntheticWSOL
from fcam.wsol import available, build, make_optimizer, train_step


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="spol,cstn", help="methods besides the 'cam' reference")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--feature-layer", default="layer3")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="batch 4, 2 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.rounds, args.width = 4, 2, 32
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    data = SyntheticWSOL(args.batch_size, size=args.size, seed=0, split="train")
    batch = next(iter(DataLoader(data, batch_size=args.batch_size)))
    images, labels = batch["image"], batch["label"]
    methods = ["cam", *[m for m in args.methods.split(",") if m and m != "cam"]]
    unknown = [m for m in methods if m not in available()]
    if unknown:
        raise SystemExit(f"not in fcam.wsol.available(): {unknown}")
    runs: dict[str, tuple[Any, str]] = {}
    for method in methods:
        torch.manual_seed(0)
        base = torchvision.models.get_model(args.arch, weights=None)
        built = build(base, method, data.num_classes, feature_layer=args.feature_layer,
                      width=args.width)
        stages = ["cam", "seg"] if method == "spol" else [""]
        for stage in stages:
            runs[f"{method}:{stage}" if stage else method] = (built, stage)
    optimizers = {name: make_optimizer(model, 1e-4) for name, (model, _) in runs.items()}

    def step(name: str) -> float:
        model, stage = runs[name]
        if stage:
            model.stage = stage
        tic = time.perf_counter()
        train_step(model, images, labels, name.split(":")[0], optimizers[name])
        return time.perf_counter() - tic

    for model, _ in runs.values():
        model.train()
    for name in runs:  # warm-up
        step(name)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name in runs:
            times[name].append(step(name))
    med = {name: statistics.median(t) for name, t in times.items()}
    result = {name: {"step_s": s, "overhead_pct": 100 * (s / med["cam"] - 1)} for name, s in med.items()}
    print(f"\nStep time, {args.arch} cut at {args.feature_layer}, {args.size} px, batch "
          f"{args.batch_size}, median of {args.rounds} alternated rounds, {args.threads} threads\n")
    print("| method | step s | overhead vs CE |")
    print("|---|---:|---:|")
    for name, r in result.items():
        print(f"| {name} | {r['step_s']:.3f} | {r['overhead_pct']:+.0f} % |")
    if args.json:
        atomic_write_text(args.json, json.dumps({"settings": vars(args), "steps": result}, indent=1))
    return result


if __name__ == "__main__":
    main()
