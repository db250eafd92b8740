"""WSOL methods on SyntheticWSOL: PxAP, MaxBoxAccV2 and MaxBoxAcc in the style of F-CAM's table.

The rows of F-CAM's Table 1 that fcam can run, per backbone of ``--backbones``. For every
training method of the table (CAM, HaS, CutMix, ADL, ACoL, SPG, EIL, MEIL, DANet, SPOL, CSTN)
that :func:`fcam.wsol.available` offers (the others are skipped with a logged note), one
classifier (a torchvision CNN cut at ``--feature-layer``, random init) is trained with
:func:`fcam.wsol.train` on the synthetic training split, then scored on the test split
(GT-known protocol, :mod:`fcam.evaluation`):

* the method's own CAM (``built.cams``) brought to the input size with
  :func:`fcam.cams.cam_to_size` (bilinear, min-max);
* F-CAM trained on those seeds (``FCAM(built, built.target_layer, cam=built.cams)``);
* the center baseline (:func:`fcam.wsol.center_baseline`) and the FSL baseline
  (:func:`fcam.wsol.fsl_baseline`, k images per class with full masks, on the CAM classifier);
* the table's lower half: the six CAM extractors (CAM, Grad-CAM, Grad-CAM++,
  Smooth-Grad-CAM++, XGrad-CAM, LayerCAM) on the plain ``cam`` classifier, alone
  (:func:`fcam.evaluation.cam_map_fn`) and + F-CAM (``FCAM(..., cam=<name>)``);
* a "best WSOL + F-CAM" row (the training method whose F-CAM has the highest PxAP).

DANet uses a two-level hierarchy found by :func:`fcam.wsol.hierarchy_from_weights` on the
``cam`` classifier's weights (``--danet-hierarchy``; ``none``: DDA alone).

It also times one training step of every method against plain CE training ("cam") on the
same batch, alternating the methods round after round in this process, and reports the
median ratio.

Usage::

    python benchmarks/wsol_table.py --out /tmp/wsol_table.json          # default: resnet18
    python benchmarks/wsol_table.py --backbones resnet18,vgg11_bn       # two backbones
    python benchmarks/wsol_table.py --methods eil,meil,danet --cams ""  # some rows only
    python benchmarks/wsol_table.py --quick                              # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from typing import Any

import torch
import torchvision
from cached_training import load_or_train
from fcam_options import parse_options
from torch.utils.data import DataLoader, Subset

from fcam import FCAM
from fcam.cams import cam_to_size, create
from fcam.data import SyntheticWSOL
from fcam.demo.cache import cache_dir, config_key
from fcam.evaluation import cam_map_fn, evaluate_localization, fcam_map_fn
from fcam.wsol import (
    available,
    build,
    center_baseline,
    fsl_baseline,
    hierarchy_from_weights,
    make_optimizer,
    train,
    train_step,
)

logger = logging.getLogger("wsol_table")

#: The training methods of F-CAM's Table 1, in its order.
TABLE_METHODS = ("cam", "has", "cutmix", "adl", "acol", "spg", "eil", "meil", "danet", "spol", "cstn")
#: The CAM extractors of the table's lower half (run on the plain ``cam`` classifier).
TABLE_CAMS = ("cam", "gradcam", "gradcampp", "smoothgradcampp", "xgradcam", "layercam")
#: Feature layer per backbone at 64 px: the stride-16 stage, so every CAM is 4 × 4.
FEATURE_LAYERS = {"resnet18": "layer3", "resnet50": "layer3", "vgg11_bn": "features.27",
                  "vgg16": "features.29", "mobilenet_v2": "features.13"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--backbones", default="resnet18",
                   help="comma-separated torchvision names (resnet18 fits the CPU budget; "
                        "resnet18,vgg11_bn gives two backbone column groups)")
    p.add_argument("--feature-layer", default=None,
                   help="layer the heads read (default: the stride-16 stage, FEATURE_LAYERS)")
    p.add_argument("--width", type=int, default=256, help="hidden width of ACoL/SPG/DANet heads")
    p.add_argument("--n-train", type=int, default=448)
    p.add_argument("--n-test", type=int, default=150)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--method-lr", default="cstn=0.01",
                   help="per-method learning rates, 'method=lr,...' (CSTN's joint softmax diverges "
                        "to a NaN loss at 0.05 from scratch; 'none' for --lr everywhere)")
    p.add_argument("--head-lr-ratio", type=float, default=1.0,
                   help="heads' lr / lr (10 in wsolevaluation, which fine-tunes ImageNet "
                        "backbones; 1 here because the backbone trains from scratch)")
    p.add_argument("--danet-hierarchy", default="3,2",
                   help="DANet's parents per level from the cam classifier's weights "
                        "(hierarchy_from_weights); 'none' for DDA alone")
    p.add_argument("--fcam-train", type=int, default=192)
    p.add_argument("--fcam-epochs", type=int, default=3)
    p.add_argument("--fcam-batch-size", type=int, default=8)
    p.add_argument("--crf-weight", type=float, default=None,
                   help="F-CAM's crf_weight at 224 px (default: fcam's own default)")
    p.add_argument("--cam-exponent", type=float, default=None,
                   help="F-CAM's cam_exponent (default: fcam's own default)")
    p.add_argument("--cam-mix", type=float, default=None,
                   help="F-CAM's cam_mix (default: fcam's own default)")
    p.add_argument("--fcam-option", action="append", default=[], metavar="NAME=VALUE",
                   help="any other FCAM option for every + F-CAM row, e.g. sl_max=10 (repeatable)")
    p.add_argument("--no-cache", action="store_true",
                   help="retrain the WSOL classifiers instead of loading them from fcam's cache dir")
    p.add_argument("--fsl-k", type=int, default=5)
    p.add_argument("--fsl-epochs", type=int, default=30)
    p.add_argument("--timing-rounds", type=int, default=6)
    p.add_argument("--timing-methods", default=None,
                   help="methods whose training step is timed against 'cam' (default: --methods); "
                        "freshly built models, so rows split over several runs can still be timed in one")
    p.add_argument("--no-baselines", action="store_true", help="skip the center and FSL rows")
    p.add_argument("--methods", default=",".join(TABLE_METHODS))
    p.add_argument("--cams", default=",".join(TABLE_CAMS), help="CAM extractors of the lower half")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--interval", type=float, default=0.001, help="cam_curve_interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="tiny smoke-test settings")
    args = p.parse_args()
    args.method_lrs = parse_method_lr(args.method_lr)
    if args.quick:
        args.n_train, args.n_test, args.epochs, args.fcam_train = 64, 20, 1, 16
        args.fcam_epochs, args.fsl_k, args.fsl_epochs, args.timing_rounds = 1, 1, 1, 1
        args.width = 32
    return args


def scores_row(name: str, scores: Any) -> dict[str, Any]:
    return {"row": name, "pxap": scores.pxap, "maxboxacc_v2": scores.maxboxacc_v2,
            "maxboxacc": scores.maxboxacc, "accuracy": scores.classification_acc}


def own_cam_map_fn(built: Any):
    def map_fn(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cam_to_size(built.cams(images, labels), tuple(images.shape[-2:]))
    return map_fn


def time_steps(models: dict[str, Any], batch: dict[str, torch.Tensor], rounds: int) -> dict[str, float]:
    """Median seconds of one training step per method, methods alternated every round."""
    optimizers = {m: make_optimizer(model, 1e-4) for m, model in models.items()}
    gens = {m: torch.Generator().manual_seed(0) for m in models}
    times: dict[str, list[float]] = {m: [] for m in models}
    images, labels = batch["image"], batch["label"]
    for model in models.values():
        model.train()
    for m, model in models.items():  # warm-up
        train_step(model, images, labels, m, optimizers[m], gens[m])
    for _ in range(rounds):
        for m, model in models.items():
            start = time.perf_counter()
            train_step(model, images, labels, m, optimizers[m], gens[m])
            times[m].append(time.perf_counter() - start)
    for model in models.values():
        model.eval()
    return {m: statistics.median(t) for m, t in times.items()}


def _train_settings(args: argparse.Namespace, arch: str, method: str) -> dict[str, Any]:
    """What a trained WSOL classifier depends on (its cache key)."""
    keys = ("size", "width", "n_train", "epochs", "batch_size", "head_lr_ratio", "seed", "quick")
    settings = {k: getattr(args, k) for k in keys}
    settings["lr"] = method_lr(args, method)
    settings.update(arch=arch, feature_layer=feature_layer(args, arch))
    if method == "danet":
        settings["danet_hierarchy"] = args.danet_hierarchy
    return settings


def feature_layer(args: argparse.Namespace, arch: str) -> str | None:
    return args.feature_layer or FEATURE_LAYERS.get(arch)


def fcam_options(args: argparse.Namespace) -> dict[str, Any]:
    options = parse_options(args.fcam_option)
    if args.crf_weight is not None:
        options["crf_weight"] = args.crf_weight
    for name in ("cam_exponent", "cam_mix"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def build_options(method: str, args: argparse.Namespace, plain: Any) -> dict[str, Any]:
    """DANet's hierarchy, found on the plain ``cam`` classifier's class weights."""
    if method != "danet" or args.danet_hierarchy == "none":
        return {}
    if plain is None:
        raise ValueError("DANet's hierarchy needs the cam classifier: keep 'cam' in --methods")
    sizes = [int(v) for v in args.danet_hierarchy.split(",")]
    hierarchy = hierarchy_from_weights(plain.heads[-1].weight, sizes, seed=args.seed)
    logger.info("danet hierarchy from the cam classifier's weights: %s", hierarchy)
    return {"hierarchy": hierarchy}


def run_method(method: str, arch: str, args: argparse.Namespace, loaders: dict[str, Any],
               num_classes: int, plain: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Train one method, then score its own CAM and F-CAM on its seeds."""
    torch.manual_seed(args.seed)
    base = torchvision.models.get_model(arch, weights=None)
    built = build(base, method, num_classes, feature_layer=feature_layer(args, arch), width=args.width,
                  seed=args.seed, **build_options(method, args, plain))
    evaluate = dict(cam_curve_interval=args.interval, progress=False)

    def train_method() -> dict[str, Any]:
        t0 = time.time()
        history = train(built, loaders["train"], method, epochs=args.epochs, lr=method_lr(args, method),
                        progress=False, seed=args.seed, head_lr_ratio=args.head_lr_ratio)
        return {"train_s": time.time() - t0, "loss": history[-1]["loss"]}

    path = cache_dir() / "wsol" / f"{method}-{config_key(_train_settings(args, arch, method))}.pt"
    trained = load_or_train(built, path, train_method, retrain=args.no_cache)
    train_s, loss = trained["train_s"], trained["loss"]
    built.eval()
    own = evaluate_localization(own_cam_map_fn(built), built, loaders["test"], **evaluate)
    t0 = time.time()
    fc = FCAM(built, built.target_layer, cam=built.cams, seed=args.seed, **fcam_options(args))
    fc.fit(loaders["fcam"], epochs=args.fcam_epochs, progress=False)
    fcam_s = time.time() - t0
    with_fcam = evaluate_localization(fcam_map_fn(fc), built, loaders["test"], **evaluate)
    return built, [
        {**scores_row(method, own), "train_s": round(train_s), "train_loss": loss},
        {**scores_row(f"{method} + F-CAM", with_fcam), "fit_s": round(fcam_s)},
    ]


def cam_rows(name: str, args: argparse.Namespace, loaders: dict[str, Any], plain: Any) -> list[dict[str, Any]]:
    """One CAM extractor of the lower half on the plain classifier, alone and + F-CAM."""
    evaluate = dict(cam_curve_interval=args.interval, progress=False)
    with create(name, plain, plain.target_layer) as extractor:
        alone = evaluate_localization(cam_map_fn(extractor), plain, loaders["test"], **evaluate)
    t0 = time.time()
    fc = FCAM(plain, plain.target_layer, cam=name, seed=args.seed, **fcam_options(args))
    fc.fit(loaders["fcam"], epochs=args.fcam_epochs, progress=False)
    fcam_s = time.time() - t0
    with_fcam = evaluate_localization(fcam_map_fn(fc), plain, loaders["test"], **evaluate)
    return [scores_row(f"CAM extractor {name}", alone),
            {**scores_row(f"CAM extractor {name} + F-CAM", with_fcam), "fit_s": round(fcam_s)}]


def baseline_rows(args: argparse.Namespace, train_set: Any, loaders: dict[str, Any],
                  encoder: Any) -> list[dict[str, Any]]:
    """The center baseline and the FSL baseline (decoder on ``encoder``, full masks)."""
    evaluate = dict(cam_curve_interval=args.interval, progress=False)
    center = evaluate_localization(
        lambda images, labels: center_baseline(images.shape[0], tuple(images.shape[-2:])),
        None, loaders["test"], **evaluate)
    fsl = fsl_baseline(encoder, train_set, encoder.target_layer, k=args.fsl_k,
                       epochs=args.fsl_epochs, progress=False, seed=args.seed)
    scores = evaluate_localization(fcam_map_fn(fsl), encoder, loaders["test"], **evaluate)
    return [scores_row("center baseline", center),
            scores_row(f"FSL baseline (k={args.fsl_k}/class)", scores)]


def parse_method_lr(text: str) -> dict[str, float]:
    """``"cstn=0.01,spol=0.02"`` -> ``{"cstn": 0.01, "spol": 0.02}`` (``"none"`` or ``""``: ``{}``)."""
    if text.strip().lower() in ("", "none"):
        return {}
    out = {}
    for part in text.split(","):
        method, sep, value = part.partition("=")
        if not sep or method.strip() not in TABLE_METHODS:
            raise SystemExit(f"--method-lr: expected method=lr with a method of {TABLE_METHODS}, got {part!r}")
        out[method.strip()] = float(value)
    return out


def method_lr(args: argparse.Namespace, method: str) -> float:
    return args.method_lrs.get(method, args.lr)


def run_backbone(arch: str, args: argparse.Namespace, train_set: Any, loaders: dict[str, Any],
                 started: float) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every row of one backbone, plus the step overheads of its methods."""
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    offered = available()
    for method in [m for m in args.methods.split(",") if m]:
        if method not in offered:
            logger.warning("%s: skipped, not in fcam.wsol.available() of this fcam", method)
            rows += [{"row": name, "skipped": "not available"} for name in (method, f"{method} + F-CAM")]
            continue
        models[method], method_rows = run_method(method, arch, args, loaders, train_set.num_classes,
                                                 models.get("cam"))
        rows += method_rows
        logger.info("%s %s: %s (%.0f s)", arch, method, method_rows, time.time() - started)
    plain = models.get("cam")
    for name in [c for c in args.cams.split(",") if c]:
        if plain is None:
            logger.warning("CAM extractor rows need the cam classifier: keep 'cam' in --methods")
            break
        rows += cam_rows(name, args, loaders, plain)
        logger.info("%s %s: %s (%.0f s)", arch, name, rows[-2:], time.time() - started)
    if models and not args.no_baselines:
        rows += baseline_rows(args, train_set, loaders, plain or next(iter(models.values())))
        wsol = [r for r in rows if r["row"].endswith("+ F-CAM") and "pxap" in r
                and not r["row"].startswith("CAM extractor")]
        if wsol:
            best = max(wsol, key=lambda r: r["pxap"])
            rows.append({**best, "row": "best WSOL + F-CAM", "best": best["row"]})
    timed = [m for m in (args.timing_methods or args.methods).split(",") if m in offered]
    step_s = {}
    if timed and args.timing_rounds > 0:
        fresh = {m: build(torchvision.models.get_model(arch, weights=None), m, train_set.num_classes,
                          feature_layer=feature_layer(args, arch), width=args.width, seed=args.seed,
                          **build_options(m, args, plain)) for m in timed}
        batch = next(iter(DataLoader(train_set, batch_size=args.batch_size)))
        step_s = time_steps(fresh, batch, args.timing_rounds)
    base_s = step_s.get("cam")
    overheads = {m: {"step_s": s, "overhead_pct": None if base_s is None else 100 * (s / base_s - 1)}
                 for m, s in step_s.items()}
    return rows, overheads


def print_report(args: argparse.Namespace, tables: dict[str, list[dict[str, Any]]],
                 overheads: dict[str, dict[str, dict[str, Any]]], wall_s: float) -> None:
    arches = list(tables)
    print(f"\nWSOL table: SyntheticWSOL {args.size} px, {', '.join(arches)} (random init), "
          f"{args.n_train} train / {args.n_test} test images, {args.epochs} epochs, lr {args.lr}"
          + "".join(f" ({m}: {lr})" for m, lr in args.method_lrs.items()) + f", wall {wall_s:.0f} s\n")
    print("| row | " + " | ".join(f"{a} PxAP | {a} MaxBoxAccV2 | {a} MaxBoxAcc | {a} acc." for a in arches) + " |")
    print("|---|" + "---:|" * (4 * len(arches)))
    order = list(dict.fromkeys(r["row"] for a in arches for r in tables[a]))
    for name in order:
        cells = []
        for a in arches:
            r = next((r for r in tables[a] if r["row"] == name), None)
            if r is None or "skipped" in r:
                cells += ["not run"] * 4
                continue
            acc = "" if r.get("accuracy") is None else f"{r['accuracy']:.1f}"
            cells += [f"{r['pxap']:.1f}", f"{r['maxboxacc_v2']:.1f}", f"{r['maxboxacc']:.1f}", acc]
        best = next((r.get("best") for a in arches for r in tables[a] if r["row"] == name and "best" in r), None)
        label = f"{name} ({best})" if best and len(arches) == 1 else name
        print(f"| {label} | " + " | ".join(cells) + " |")
    for a in arches:
        if not overheads[a]:
            continue
        print(f"\nTraining step on {a} (one batch, methods alternated), against plain CE ('cam'):\n")
        print("| method | step s | overhead vs CE |")
        print("|---|---:|---:|")
        for m, o in overheads[a].items():
            pct = "" if o["overhead_pct"] is None else f"{o['overhead_pct']:+.1f} %"
            print(f"| {m} | {o['step_s']:.3f} | {pct} |")


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    started = time.time()
    train_set = SyntheticWSOL(args.n_train, size=args.size, seed=args.seed, split="train")
    test_set = SyntheticWSOL(args.n_test, size=args.size, seed=args.seed, split="test")
    shuffle = dict(shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(args.seed))
    loaders = {
        "train": DataLoader(train_set, batch_size=args.batch_size, **shuffle),
        "fcam": DataLoader(Subset(train_set, range(min(args.fcam_train, args.n_train))),
                           batch_size=args.fcam_batch_size, **shuffle),
        "test": DataLoader(test_set, batch_size=50),
    }
    tables: dict[str, list[dict[str, Any]]] = {}
    overheads: dict[str, dict[str, dict[str, Any]]] = {}
    for arch in [a for a in args.backbones.split(",") if a]:
        tables[arch], overheads[arch] = run_backbone(arch, args, train_set, loaders, started)
    print_report(args, tables, overheads, time.time() - started)
    if args.out:
        settings = {k: v for k, v in vars(args).items() if k != "out"}
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"settings": settings, "tables": tables, "overheads": overheads,
                       "wall_s": time.time() - started}, fh, indent=1)


if __name__ == "__main__":
    main()
