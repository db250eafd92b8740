"""F-CAM on real photographs: pretrained EfficientNet-Lite0/1/2 on an image-and-mask folder.

For each classifier (ImageNet EfficientNet-Lite0, Lite1, Lite2 from the wheels of the
``pretrained`` extra, at their native sides 224, 240, 260 px) and one target class (ImageNet
339 "sorrel" for the Weizmann horses), every photograph of the folder is scored by

* the interpolated CAM, Grad-CAM, Grad-CAM++ and LayerCAM of the classifier's last stage;
* F-CAM with **default settings** on Grad-CAM++ seeds (``FCAM(model, "head").fit(loader)``),
  fitted on the *other* fold's photographs: images only, each epoch one random-resized crop
  (50-100 % of the area) and horizontal flip of every training photograph;
* the same decoder trained on the other fold's **masks**
  (:func:`fcam.wsol.fsl_baseline`): on every training photograph (the full-supervision
  ceiling, with F-CAM's class head and class-agnostic; the stronger is the ceiling) and on
  k = 5 of them (the few-shot baseline).

Two folds (odd and even positions in name order), so every photograph is scored once, by
models that never saw it. PxAP, MaxBoxAccV2 and MaxBoxAcc (against the masks and their
bounding boxes) are computed on each fold's photographs, whose maps come from one model, and
averaged over the folds (the scores pooled over all photographs are in the JSON too). The
share of the gap that F-CAM closes is
``(F-CAM - Grad-CAM++) / (ceiling - Grad-CAM++)``. A grid (photo | mask | Grad-CAM++ | F-CAM)
of 8 photographs per classifier is written next to the JSON results.

Usage::

    python benchmarks/real_photos.py --data-root ../shared/data/weizmann-horse-dev --out real
    python benchmarks/real_photos.py --data-root DIR --variants 0 --limit 16 --epochs 1 \
        --ceiling-epochs 2                       # a smoke run (minutes)
    # folds side by side: one process per fold, then one that reads them back and scores
    python benchmarks/real_photos.py --data-root DIR --variants 0 --methods fcam --fold 0 --out real &
    python benchmarks/real_photos.py --data-root DIR --variants 0 --methods fcam --fold 1 --out real &
    wait; python benchmarks/real_photos.py --data-root DIR --variants 0 --out real

The Weizmann Horse database (Borenstein and Ullman, ECCV 2002) is research-use data and is not
shipped with fcam: the folder is an argument.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fcam_options import parse_options
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from fcam import FCAM
from fcam.cams import create
from fcam.core.io import atomic_write_text
from fcam.core.normalisation import normalise_raw
from fcam.data import MaskFolder
from fcam.explainer import FCAMConfig, TrainOptions
from fcam.metrics import maxboxacc, pxap
from fcam.viz import comparison_grid
from fcam.wsol import fsl_baseline

logger = logging.getLogger("real_photos")

SORREL = 339
CAMS = ("cam", "gradcam", "gradcampp", "layercam")
CEILING = {"epochs": 40, "lr": 0.03, "lr_schedule": "cosine", "batch_size": 8}
METRICS = ("pxap", "maxboxacc_v2", "maxboxacc")
#: The fitted maps, most important first.
FITTED = ("fcam", "ceiling_class", "fewshot", "ceiling_agnostic")


def fold_split(count: int, folds: int = 2) -> list[tuple[list[int], list[int]]]:
    """``(train, test)`` index lists: fold ``f`` tests the positions ``i % folds == f`` and
    trains on the rest, so every position is tested exactly once.

    Example:
        >>> fold_split(5)
        [([1, 3], [0, 2, 4]), ([0, 2, 4], [1, 3])]
    """
    if folds < 2 or count < folds:
        raise ValueError(f"need at least {folds} >= 2 photographs for {folds} folds, got {count}")
    return [([i for i in range(count) if i % folds != f], [i for i in range(count) if i % folds == f])
            for f in range(folds)]


class Photos(Dataset):
    """In-memory items of a :class:`~fcam.data.MaskFolder` (read once, reused by every fit)."""

    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    def label_of(self, index: int) -> int:
        return int(self.items[index]["label"])


class Augmented(Dataset):
    """Images only (no mask): a random-resized crop (50-100 % of the area, aspect 3/4-4/3) back
    to the side ``S`` and a horizontal flip, drawn anew at every access."""

    def __init__(self, items: Sequence[dict[str, Any]], mean: Sequence[float], std: Sequence[float]):
        self.items, self.mean, self.std = list(items), mean, std
        side = int(self.items[0]["raw"].shape[-1])
        self.transform = v2.Compose([
            v2.RandomResizedCrop(side, scale=(0.5, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        raw = self.transform(item["raw"])
        return {"image": normalise_raw(raw, self.mean, self.std), "raw": raw, "label": item["label"]}


def score(maps: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor,
          box_interval: float = 0.001) -> dict[str, float]:
    """PxAP, MaxBoxAccV2 and MaxBoxAcc (percent) of ``(N, S, S)`` maps against bool masks and
    ``(N, 4)`` inclusive boxes (one object per photograph)."""
    box_list = [b[None].numpy() for b in boxes]
    return {
        "pxap": pxap(maps, masks),
        "maxboxacc_v2": maxboxacc(maps, box_list, version=2, cam_curve_interval=box_interval),
        "maxboxacc": maxboxacc(maps, box_list, version=1, cam_curve_interval=box_interval),
    }


def fold_scores(maps: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor,
                folds: Sequence[tuple[list[int], list[int]]], box_interval: float = 0.001,
                ) -> dict[str, float]:
    """:func:`score` on each fold's test photographs, averaged with the folds' sizes as weights.

    Each fold is scored on its own because its maps come from one model: PxAP and the box
    metrics sweep thresholds shared by all the maps they pool, and two models' maps need not
    share a scale (an F-CAM fit whose probabilities stay low ranks its pixels well but sits
    below the other fit's thresholds).
    """
    total = sum(len(test) for _, test in folds)
    out = dict.fromkeys(METRICS, 0.0)
    for _, test in folds:
        part = score(maps[test], masks[test], boxes[test], box_interval)
        for metric in METRICS:
            out[metric] += part[metric] * len(test) / total
    return out


def gap_share(cam: float, method: float, ceiling: float) -> float | None:
    """The share of the gap from ``cam`` to ``ceiling`` that ``method`` closes (``None`` when
    the ceiling is not above the CAM).

    Example:
        >>> gap_share(60.0, 75.0, 80.0)
        0.75
    """
    return (method - cam) / (ceiling - cam) if ceiling > cam else None


def _explain(fc: FCAM, images: torch.Tensor, label: int, device: torch.device) -> torch.Tensor:
    out = []
    for start in range(0, len(images), 16):
        batch = images[start:start + 16].to(device)
        with torch.no_grad():
            out.append(fc.explain(batch, targets=[label] * len(batch)).cpu())
    return torch.cat(out)


def cam_maps(model: nn.Module, layer: str, images: torch.Tensor, label: int,
             device: torch.device, methods: Sequence[str] = CAMS) -> dict[str, torch.Tensor]:
    """Interpolated maps of each CAM method for ``label`` on every image."""
    maps = {}
    for name in methods:
        with create(name, model, target_layer=layer) as extractor:
            maps[name] = torch.cat([
                extractor.explain(images[s:s + 16].to(device), targets=[label] * len(images[s:s + 16])).cpu()
                for s in range(0, len(images), 16)
            ])
    return maps


def cached_cam_maps(model: nn.Module, images: torch.Tensor, label: int, device: torch.device,
                    cache: Path | None) -> dict[str, torch.Tensor]:
    """:func:`cam_maps` of the ``head`` layer, saved in (and read back from) ``cache``."""
    saved = None if cache is None else cache / "cams.pt"
    if saved is not None and saved.is_file():
        return dict(torch.load(saved, weights_only=True))
    maps = cam_maps(model, "head", images, label, device)
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        torch.save(maps, saved)
    return maps


def fit_defaults() -> dict[str, Any]:
    """The defaults of :meth:`fcam.FCAM.fit` that shape a fit (:class:`fcam.explainer.TrainOptions`)."""
    defaults = TrainOptions()
    return {name: getattr(defaults, name)
            for name in ("epochs", "lr", "momentum", "nesterov", "weight_decay", "lr_schedule")}


def run_folds(model: nn.Module, layer: str, items: Sequence[dict[str, Any]], *, label: int,
              mean: Sequence[float], std: Sequence[float], folds: int = 2,
              epochs: int | None = None, ceiling: dict[str, Any] | None = None, k: int = 5,
              batch_size: int = 8, device: torch.device | str = "cpu", seed: int = 0,
              methods: Sequence[str] = FITTED, cache: Path | None = None,
              only_fold: int | None = None, fcam_options: dict[str, Any] | None = None,
              ) -> dict[str, Any]:
    """Cross-fitted maps of F-CAM (default settings, Grad-CAM++ seeds), of the full-mask
    decoders (class head and class-agnostic) and of the ``k``-shot decoder.

    One method at a time (the most important first), fold by fold; each fold's maps are saved
    under ``cache`` when given and read back from there by a rerun, so an interrupted run
    resumes, and ``only_fold`` lets separate processes fit the folds side by side.
    Each saved fold records the settings its fit used (epochs, F-CAM's effective configuration,
    the full-mask decoders' training); a cached fold fitted with other settings, including other
    fcam defaults, is an error, not a silent reuse.

    Returns:
        ``{"maps": {method: (N, S, S)}, "fit_s"/"cpu_s": {method: [wall/CPU seconds per fold]},
        "folds": ..., "complete": bool}``: position ``i`` of every map was made by models
        fitted on the other folds only; ``complete`` is False when ``only_fold`` left folds
        neither fitted nor cached.
    """
    device = torch.device(device)
    ceiling = {**CEILING, **(ceiling or {})}
    options = dict(fcam_options or {})
    images = torch.stack([item["image"] for item in items])
    n = len(items)
    split = fold_split(n, folds)
    maps: dict[str, torch.Tensor] = {}
    fit_s: dict[str, list[float]] = {}
    cpu_s: dict[str, list[float]] = {}
    complete = True
    for name in methods:
        maps[name], fit_s[name], cpu_s[name] = torch.zeros(n, *images.shape[-2:]), [], []
        settings: dict[str, Any] = {"seed": seed, "batch_size": batch_size}
        if name == "fcam":
            # The effective configuration and fit schedule, not just the options given: a fold
            # fitted under other fcam defaults is then a mismatch too.
            config = FCAMConfig.from_options(mean=tuple(mean), std=tuple(std), seed=seed, **options)
            settings.update(epochs=epochs, fcam_options=options, fcam_config=config.to_dict(),
                            fit_defaults=fit_defaults())
        else:
            settings.update(ceiling=ceiling, k=k)
        for f, (train, test) in enumerate(split):
            saved = None if cache is None else cache / f"{name}_fold{f}.pt"
            if saved is not None and saved.is_file():
                state = torch.load(saved, weights_only=True)
                if state.get("settings") != settings:
                    raise ValueError(f"{saved} was fitted with {state.get('settings')}, not {settings}: "
                                     "give this run its own --out (or remove the file)")
                maps[name][test] = state["maps"]
                fit_s[name].append(state["fit_s"])
                cpu_s[name].append(state["cpu_s"])
                logger.info("fold %d/%d: %s read from %s", f + 1, folds, name, saved)
                continue
            if only_fold is not None and f != only_fold:
                complete = False
                continue
            torch.manual_seed(seed + f)
            shots = k if name == "fewshot" else len(train)
            tic, cpu = time.perf_counter(), time.process_time()
            if name == "fcam":
                loader = DataLoader(Augmented([items[i] for i in train], mean, std),
                                    batch_size=batch_size, shuffle=True,
                                    drop_last=len(train) > batch_size)
                fc = FCAM(model, layer, cam="gradcampp", mean=mean, std=std, seed=seed,
                          **options)
                fc.fit(loader, **({} if epochs is None else {"epochs": epochs}), device=device,
                       progress=False)
            else:
                fc = fsl_baseline(model, Photos([items[i] for i in train]), layer, k=shots,
                                  seed=seed, progress=False, class_head=name != "ceiling_agnostic",
                                  mean=mean, std=std, **ceiling)
            fit_s[name].append(time.perf_counter() - tic)
            cpu_s[name].append(time.process_time() - cpu)
            logger.info("fold %d/%d: %s fitted on %d photographs in %.0f s (%.0f s of CPU)", f + 1,
                        folds, name, min(shots, len(train)), fit_s[name][-1], cpu_s[name][-1])
            maps[name][test] = _explain(fc, images[test], label, device)
            if saved is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"maps": maps[name][test], "fit_s": fit_s[name][-1],
                            "cpu_s": cpu_s[name][-1], "settings": settings}, saved)
    return {"maps": maps, "fit_s": fit_s, "cpu_s": cpu_s, "folds": split, "complete": complete}


def summarise(scores: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The stronger full-mask decoder (by PxAP) as the ceiling, and the gap shares F-CAM closes
    from the interpolated Grad-CAM++."""
    ceilings = [name for name in ("ceiling_class", "ceiling_agnostic") if name in scores]
    if not ceilings or "fcam" not in scores:  # a partial run (--methods)
        return {"ceiling": None, "gap_share": dict.fromkeys(METRICS)}
    which = max(ceilings, key=lambda name: scores[name]["pxap"])
    shares = {metric: gap_share(scores["gradcampp"][metric], scores["fcam"][metric],
                                scores[which][metric]) for metric in METRICS}
    return {"ceiling": which, "gap_share": shares}


def classifier_row(variant: int, data_root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Everything the table and the grid need for EfficientNet-Lite``variant``."""
    from fcam.models.efficientnet_lite import LITE_MEAN, LITE_SIZES, LITE_STD, efficientnet_lite

    device = torch.device(args.device)
    model = efficientnet_lite(variant).to(device)
    size = LITE_SIZES[variant]
    folder = MaskFolder(data_root, size=size, mean=LITE_MEAN, std=LITE_STD, label=args.label)
    count = len(folder) if args.limit is None else min(args.limit, len(folder))
    items = [folder[i] for i in range(count)]
    images = torch.stack([item["image"] for item in items])
    masks = torch.stack([item["mask"] for item in items])
    boxes = torch.stack([item["box"] for item in items])
    with torch.no_grad():
        logits = torch.cat([model(images[s:s + 32].to(device)).cpu() for s in range(0, count, 32)])
    top5 = logits.topk(5, dim=1).indices
    cache = None if args.out is None else args.out / f"maps_lite{variant}"
    if args.cams_only or (cache is not None and (cache / "cams.pt").is_file()):
        maps = cached_cam_maps(model, images, args.label, device, cache)
        if args.cams_only:
            return {"classifier": f"EfficientNet-Lite{variant}", "complete": False}
    result = run_folds(model, "head", items, label=args.label, mean=LITE_MEAN, std=LITE_STD,
                       epochs=args.epochs, ceiling={"epochs": args.ceiling_epochs}, device=device,
                       methods=args.methods, only_fold=args.fold, cache=cache,
                       fcam_options=args.fcam_options)
    if not result["complete"]:
        return {"classifier": f"EfficientNet-Lite{variant}", "complete": False,
                "fit_s": result["fit_s"], "fit_cpu_s": result["cpu_s"]}
    maps = cached_cam_maps(model, images, args.label, device, cache)
    maps.update(result["maps"])
    scores = {name: fold_scores(m, masks, boxes, result["folds"], args.box_interval)
              for name, m in maps.items()}
    pooled = {name: score(m, masks, boxes, args.box_interval) for name, m in maps.items()}
    row = {"classifier": f"EfficientNet-Lite{variant}", "size": size, "photographs": count,
           "top1_target": float((top5[:, 0] == args.label).float().mean()) * 100,
           "top5_target": float((top5 == args.label).any(1).float().mean()) * 100,
           "fit_s": {name: [round(s) for s in v] for name, v in result["fit_s"].items()},
           "fit_cpu_s": {name: [round(s) for s in v] for name, v in result["cpu_s"].items()},
           "epochs": args.epochs, "ceiling_epochs": args.ceiling_epochs,
           "fcam_options": args.fcam_options,
           "threads": torch.get_num_threads(),
           "scores": scores, "scores_pooled": pooled, **summarise(scores)}
    if args.out is not None and "fcam" in maps:
        picks = np.linspace(0, count - 1, 8).round().astype(int).tolist()
        grid = comparison_grid(
            [items[i]["raw"] for i in picks],
            {"Grad-CAM++": maps["gradcampp"][picks], "F-CAM": maps["fcam"][picks]},
            gt=masks[picks].float(), tile_size=args.tile)
        args.out.mkdir(parents=True, exist_ok=True)
        grid.save(args.out / f"grid_lite{variant}.png")
        grid.save(args.out / f"grid_lite{variant}.jpg", quality=80)
        row["grid_photos"] = [items[i]["name"] for i in picks]
    return row


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown table of the rows (one block per classifier)."""
    lines = ["| classifier | map | PxAP | MaxBoxAccV2 | MaxBoxAcc |", "|---|---|---:|---:|---:|"]
    labels = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "layercam": "LayerCAM",
              "fcam": "**F-CAM** (defaults)", "fewshot": "full masks, k = 5",
              "ceiling_class": "full masks, all (class head)",
              "ceiling_agnostic": "full masks, all (class-agnostic)"}
    for row in rows:
        options = row.get("fcam_options")
        named = {**labels, "fcam": "**F-CAM** (" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")"} \
            if options else labels
        for name, label in named.items():
            if name not in row["scores"]:
                continue
            s = row["scores"][name]
            mark = " (ceiling)" if name == row["ceiling"] else ""
            lines.append(f"| {row['classifier']} ({row['size']} px) | {label}{mark} | {s['pxap']:.1f} | "
                         f"{s['maxboxacc_v2']:.1f} | {s['maxboxacc']:.1f} |")
        shares = " / ".join("n/a" if v is None else f"{100 * v:.0f} %" for v in row["gap_share"].values())
        lines.append(f"| {row['classifier']} | gap to the ceiling closed by F-CAM | {shares} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True,
                        help="folder with rgb/ and figure_ground/ (e.g. the Weizmann horses)")
    parser.add_argument("--variants", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--label", type=int, default=SORREL, help="ImageNet target class (339 sorrel)")
    parser.add_argument("--epochs", type=int, default=None, help="F-CAM epochs (default: fit's)")
    parser.add_argument("--ceiling-epochs", type=int, default=CEILING["epochs"])
    parser.add_argument("--methods", nargs="*", default=list(FITTED), choices=FITTED,
                        help="fitted maps to make (F-CAM must be among them)")
    parser.add_argument("--fold", type=int, default=None,
                        help="fit this fold only (0-based) and save its maps; a run without "
                        "--fold then reads every fold back and scores")
    parser.add_argument("--cams-only", action="store_true",
                        help="only compute and save the CAM maps (for a later scoring run)")
    parser.add_argument("--limit", type=int, default=None, help="first N photographs only")
    parser.add_argument("--box-interval", type=float, default=0.001, help="box metrics' threshold step")
    parser.add_argument("--tile", type=int, default=112, help="grid tile side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fcam-option", action="append", default=[], metavar="NAME=VALUE",
                        help="an F-CAM option other than its default (repeatable; e.g. "
                             "crf_weight=1e-9); use a separate --out: a cached fold fitted with "
                             "other settings stops the run")
    parser.add_argument("--out", type=Path, default=None, help="write results JSON and grids here")
    args = parser.parse_args(argv)
    args.fcam_options = parse_options(args.fcam_option)
    torch.set_num_threads(args.threads)
    rows = []
    for variant in args.variants:
        tic = time.perf_counter()
        row = classifier_row(variant, args.data_root, args)
        row["total_s"] = round(time.perf_counter() - tic)
        print("ROW", json.dumps(row), flush=True)
        if row.get("complete") is False:
            continue
        rows.append(row)
        if args.out is not None:
            atomic_write_text(args.out / f"lite{variant}.json", json.dumps(row, indent=2) + "\n")
    if rows:
        print(table(rows))
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("fcam").setLevel(logging.WARNING)
    logging.getLogger("fcam.explainer.trainer").setLevel(logging.INFO)  # per-epoch progress
    main()
