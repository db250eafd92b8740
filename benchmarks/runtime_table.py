"""Runtime table in the style of F-CAM's: time per image of every CAM and WSOL map, per backbone.

For each backbone (VGG16-GAP, Inception-v3 and ResNet-50 at 224 px, random weights: speed does
not depend on them) it prints the parameter count, the feature-map size of the CAM layer and the
time per image of

* the CAMs of :mod:`fcam.cams` on the plain classifier (``extractor.explain``: forward,
  backward or masked passes, weights, resize, min-max);
* F-CAM's ``explain`` (an untrained decoder, timing only): the default map, whose seed is the
  CAM (``cam="cam"``, no backward), and the decoder alone (``cam_mix=0, cam_exponent=0``);
* the WSOL methods' own maps, ``build(model, method, classes).cams(images)``, for every method
  of :func:`fcam.wsol.available` in the table (rows of methods that are not available are
  skipped with a note);

and each time as a ratio to Grad-CAM's in the same run. All rows of one backbone are timed in
alternation, round after round, and each time is the median over ``--repeats`` rounds after one
warm-up round (a load burst on a shared machine hits all rows alike).

The Score-CAM family runs one forward per channel (and per noise sample: 35 for SS-CAM, 10 for
IS-CAM), minutes to hours per image on a CPU. Those rows are timed on ``--slow-images`` images
(default 1) once each, after the other rows, or, with ``--slow estimate`` (the CPU default), are
*estimated* from the measured time of one chunk of ``batch_size`` masked forwards times the
number of chunks; the table marks them.

VGG16-GAP is wsolevaluation's VGG16 for CAMs: torchvision's VGG16 features without pool5,
conv6 (3×3, 1024) + ReLU, global average pooling and one linear layer.

Usage::

    python benchmarks/runtime_table.py --json /tmp/runtime.json            # CPU (and CUDA if any)
    python benchmarks/runtime_table.py --device cuda --slow measure
    python benchmarks/runtime_table.py --quick                              # smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torchvision
from torch import nn

from fcam import FCAM, cams
from fcam.core.io import atomic_write_text
from fcam.wsol import available, build

logger = logging.getLogger("runtime_table")

CAM_ROWS = {"CAM": "cam", "Grad-CAM": "gradcam", "Grad-CAM++": "gradcampp",
            "Smooth-Grad-CAM++": "smoothgradcampp", "XGrad-CAM": "xgradcam", "LayerCAM": "layercam"}
WSOL_ROWS = {"ACoL": "acol", "SPG": "spg", "ADL": "adl", "EIL": "eil", "DANet": "danet",
             "SPOL": "spol", "CSTN": "cstn"}
SLOW_ROWS = {"Score-CAM": ("scorecam", 1), "SS-CAM": ("sscam", 35), "IS-CAM": ("iscam", 10)}


class VGG16GAP(nn.Module):
    """wsolevaluation's VGG16 for CAMs (module docstring); ``width`` scales the channels."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        features = torchvision.models.vgg16(weights=None).features[:-1]  # without pool5
        if width != 1.0:
            features = _thin_vgg(width)
        out = features[-2].out_channels
        self.features = features
        self.conv6 = nn.Sequential(nn.Conv2d(out, int(1024 * width), 3, padding=1), nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(int(1024 * width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.conv6(self.features(x))), 1))


def _thin_vgg(width: float) -> nn.Sequential:
    """VGG16's features without pool5, with ``width`` × the channels (the quick smoke run)."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    layers: list[nn.Module] = []
    cin = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            cout = max(1, int(int(v) * width))
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            cin = cout
    return nn.Sequential(*layers)


def backbones(classes: int, quick: bool) -> dict[str, tuple[nn.Module, str]]:
    """``{name: (model, CAM layer)}``; ``quick`` uses thin/small stand-ins."""
    if quick:
        return {"VGG16": (VGG16GAP(classes, width=0.125), "conv6"),
                "ResNet-18 (quick)": (torchvision.models.resnet18(weights=None, num_classes=classes), "layer4")}
    inception = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                                num_classes=classes)
    return {"VGG16": (VGG16GAP(classes), "conv6"),
            "Inception-v3": (inception, "Mixed_7c"),
            "ResNet-50": (torchvision.models.resnet50(weights=None, num_classes=classes), "layer4")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    tic = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - tic


#: pytorch-grad-cam's Grad-CAM, which back-propagates to the input image; fcam's own Grad-CAM
#: stops at the target layer (its gradient only needs the classifier's head), so it costs about
#: one forward pass and no decoder can run in 0.67 of it.
PGC_ROW = "Grad-CAM (pytorch-grad-cam)"


def _row_functions(model: nn.Module, layer: str, classes: int, images: torch.Tensor,
                   notes: dict[str, str]) -> dict[str, Callable[[], object]]:
    """The fast rows: CAMs, F-CAM explain and the available WSOL methods' maps."""
    fns: dict[str, Callable[[], object]] = {}
    for row, name in CAM_ROWS.items():
        extractor = cams.create(name, model, layer)
        fns[row] = lambda e=extractor: e.explain(images)
    fc = FCAM(model, layer, cam="cam")
    fc.fitted = True  # timing only: an untrained decoder costs what a trained one does
    fc.decoder.to(images.device)
    fns["F-CAM explain"] = lambda: fc.explain(images)
    fns["F-CAM explain, decoder only"] = lambda: fc.explain(images, cam_mix=0.0, cam_exponent=0.0)
    try:  # the reference the seed's table times: a full backward pass to the input
        from pytorch_grad_cam import GradCAM
    except ImportError:
        notes[PGC_ROW] = "skipped: pytorch-grad-cam is not installed (pip install grad-cam)"
    else:
        pgc = GradCAM(model=model, target_layers=[dict(model.named_modules())[layer]])
        fns[PGC_ROW] = lambda: pgc(input_tensor=images, targets=None)
    for row, method in WSOL_ROWS.items():
        if method not in available():
            notes[row] = f"skipped: {method!r} is not in fcam.wsol.available() on this version"
            continue
        try:
            built = build(model, method, classes, feature_layer=None if method == "cstn" else layer,
                          input_size=(images.shape[-2], images.shape[-1])).eval()
        except (ValueError, TypeError) as exc:  # a method that does not fit this backbone
            notes[row] = f"n/a: {exc}"
            continue
        fns[row] = built_cams(built, images)
    return fns


def built_cams(built: nn.Module, images: torch.Tensor) -> Callable[[], object]:
    """A closure over one built model's ``.cams`` (a lambda in a loop would need a default)."""
    return lambda: built.cams(images)  # type: ignore[operator]


def _slow_row(model: nn.Module, layer: str, name: str, samples: int, images: torch.Tensor,
              mode: str, batch_size: int) -> tuple[float, str]:
    """Seconds per image of one Score-CAM-family row and how it was obtained."""
    device = images.device
    extractor = cams.create(name, model, layer, batch_size=batch_size)
    if mode == "measure":
        extractor.explain(images[:1])  # warm-up on one image
        return _timed(lambda: extractor.explain(images), device) / images.shape[0], \
            f"measured on {images.shape[0]} image(s), once"
    with torch.no_grad():
        feats: dict[str, torch.Tensor] = {}
        handle = dict(model.named_modules())[layer].register_forward_hook(
            lambda _m, _i, out: feats.__setitem__("a", out))
        try:
            model(images[:1])
        finally:
            handle.remove()
        channels = feats["a"].shape[1]
        chunk = images[:1].expand(batch_size, -1, -1, -1).contiguous()
        model(chunk)  # warm-up
        per_chunk = statistics.median(_timed(lambda: model(chunk), device) for _ in range(2))
        single = _timed(lambda: model(images[:1]), device)
    chunks = math.ceil(channels * samples / batch_size)
    return single + chunks * per_chunk, (f"estimated: {chunks} chunks of {batch_size} masked "
                                         f"forwards x {per_chunk:.2f} s + one forward")


def time_backbone(name: str, model: nn.Module, layer: str, args: argparse.Namespace,
                  device: torch.device) -> dict[str, Any]:
    """Parameter count, feature size and ``{row: {ms, ratio, note}}`` of one backbone."""
    model = model.to(device).eval()
    size = (args.size, args.size)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, *size, generator=gen).to(device)
    probe: dict[str, torch.Size] = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: probe.__setitem__("shape", out.shape))
    with torch.no_grad():
        model(images[:1])
    handle.remove()
    notes: dict[str, str] = {}
    fns = _row_functions(model, layer, args.classes, images, notes)
    for fn in fns.values():  # warm-up round
        fn()
    times: dict[str, list[float]] = {row: [] for row in fns}
    for _ in range(args.repeats):
        for row, fn in fns.items():
            times[row].append(_timed(fn, device))
    per_image = {row: statistics.median(t) / args.batch for row, t in times.items()}
    for row, (cam_name, samples) in SLOW_ROWS.items():
        if args.slow == "skip":
            notes[row] = "skipped (--slow skip)"
            continue
        slow_images = images[: args.slow_images]
        per_image[row], notes[row] = _slow_row(model, layer, cam_name, samples, slow_images,
                                               args.slow, args.slow_batch)
        logger.info("%s %s: %.2f s/image (%s)", name, row, per_image[row], notes[row])
    base = per_image["Grad-CAM"]
    rows = {row: {"ms": 1e3 * s, "ratio": s / base, "note": notes.get(row, "")}
            for row, s in per_image.items()}
    for row, note in notes.items():
        rows.setdefault(row, {"ms": None, "ratio": None, "note": note})
    return {"params": sum(p.numel() for p in model.parameters()),
            "feature_size": list(probe["shape"][-2:]), "layer": layer, "rows": rows}


def print_table(device: str, results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    names = list(results)
    print(f"\nRuntime per image, {device}, {args.size} px, batch {args.batch}, median of "
          f"{args.repeats} rounds, {torch.get_num_threads()} threads\n")
    print("| | " + " | ".join(f"{n} ms | {n} × Grad-CAM" for n in names) + " |")
    print("|---|" + "---:|---:|" * len(names))
    print("| parameters | " + " | ".join(f"{results[n]['params'] / 1e6:.1f} M | " for n in names) + " |")
    print("| feature map | " + " | ".join(
        f"{results[n]['feature_size'][0]}×{results[n]['feature_size'][1]} ({results[n]['layer']}) | "
        for n in names) + " |")
    order = [*CAM_ROWS, PGC_ROW, "F-CAM explain", "F-CAM explain, decoder only", *WSOL_ROWS,
             *SLOW_ROWS]
    footnotes: list[str] = []
    for row in order:
        cells = []
        for n in names:
            r = results[n]["rows"].get(row)
            mark = ""
            if r is not None and r["note"]:
                footnotes.append(f"{n}, {row}: {r['note']}")
                mark = f" [{len(footnotes)}]"
            if r is None or r["ms"] is None:
                cells.append(f"—{mark} | —")
            else:
                cells.append(f"{r['ms']:.1f}{mark} | {r['ratio']:.2f}")
        print(f"| {row} | " + " | ".join(cells) + " |")
    print()
    for i, note in enumerate(footnotes, 1):
        print(f"[{i}] {note}")
    for n in names:
        ratio = results[n]["rows"]["F-CAM explain"]["ratio"]
        decoder = results[n]["rows"]["F-CAM explain, decoder only"]["ratio"]
        print(f"F-CAM explain / Grad-CAM on {n}: {ratio:.2f} (decoder only {decoder:.2f}); "
              f"target <= {args.target:.2f}: {'met' if ratio <= args.target else 'not met'}")
        pgc_row = results[n]["rows"].get(PGC_ROW)
        if pgc_row is not None and pgc_row["ms"] is not None:
            pgc = results[n]["rows"]["F-CAM explain"]["ms"] / pgc_row["ms"]
            print(f"F-CAM explain / pytorch-grad-cam's Grad-CAM on {n}: {pgc:.2f}; "
                  f"target <= {args.target:.2f}: {'met' if pgc <= args.target else 'not met'}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", nargs="+", default=None,
                   help="devices to time (default: cpu, and cuda when present)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1, help="images per timed call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--classes", type=int, default=200, help="classes of the heads (CUB: 200)")
    p.add_argument("--backbones", default=None,
                   help="comma-separated backbones, in the order to time them (default: all)")
    p.add_argument("--slow", choices=["measure", "estimate", "skip"], default=None,
                   help="Score-CAM family: measure, estimate (CPU default) or skip")
    p.add_argument("--slow-images", type=int, default=1)
    p.add_argument("--slow-batch", type=int, default=32, help="masked forwards per chunk")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--target", type=float, default=0.67, help="target F-CAM explain / Grad-CAM ratio")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: thin VGG16 and ResNet-18 at 64 px, one round, slow rows estimated")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.repeats, args.classes, args.slow_batch = 64, 1, 5, 8
        args.slow = args.slow or "estimate"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "json"},
                           "available_wsol": available(), "devices": {}}
    for dev in devices:
        device = torch.device(dev)
        slow = args.slow or ("estimate" if device.type == "cpu" else "measure")
        args_dev = argparse.Namespace(**{**vars(args), "slow": slow})
        torch.manual_seed(0)
        results: dict[str, dict[str, Any]] = {}
        out["devices"][dev] = {"slow": slow, "backbones": results}
        nets = backbones(args.classes, args.quick)
        for name in args.backbones.split(",") if args.backbones else list(nets):
            if name not in nets:
                raise SystemExit(f"unknown backbone {name!r}; choose from {list(nets)}")
            model, layer = nets.pop(name)
            started = time.time()
            results[name] = time_backbone(name, model, layer, args_dev, device)
            logger.info("%s on %s: %.0f s", name, dev, time.time() - started)
            del model
            print_table(dev, results, args_dev)  # after every backbone: a long run keeps its rows
            if args.json:
                atomic_write_text(args.json, json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
