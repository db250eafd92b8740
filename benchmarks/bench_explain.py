"""Benchmark: FCAM.explain vs pytorch-grad-cam GradCAM, and F-CAM fit throughput.

1. Inference: ``FCAM.explain`` (one classifier forward + decoder) for each decoder of
   ``--upscalers`` (the ``upscaler`` argument of :class:`fcam.FCAM`: ``"unet"``, F-CAM's published
   decoder, and ``"unet-lite"``) vs pytorch-grad-cam's ``GradCAM`` (forward + backward +
   weighting + resize), resnet50 at 224 px, batch 1 and 16, on the CPU and on CUDA when present.
   Target: F-CAM ≤ 0.4× GradCAM time (``--target``). The runs of GradCAM and of every decoder
   are interleaved round by round (a load burst on a shared machine hits all of them alike)
   and each time is the median over ``--repeats`` rounds after ``--warmup`` rounds; one summary
   line per batch size gives every decoder's ratio.
2. Training: images/s of one ``FCAM.fit`` epoch vs a plain loop over the same encoder and
   decoder (frozen classifier forward, decoder forward, cross-entropy on a fixed target,
   backward, SGD step) without seeds, CAM and CRF/size losses. Target: overhead ≤ 30 %.

Fit timings are the best of ``--repeats`` epochs of each kind, alternated. The decoder weights
are random (speed does not depend on them).

Usage::

    python benchmarks/bench_explain.py --repeats 5 --fit-images 96
    python benchmarks/bench_explain.py --skip-fit --upscalers unet unet-lite --batches 1 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from pytorch_grad_cam import GradCAM
from torch.utils.data import DataLoader, TensorDataset

from fcam import FCAM


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        tic = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def _interleaved_medians(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int,
                         repeats: int) -> dict[str, float]:
    """Median seconds of each function, timed in alternation (one call of each per round)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            tic = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_explain(device: torch.device, batches: list[int], size: int, warmup: int, repeats: int,
                  upscalers: list[str] | None = None) -> list[dict]:
    """One row per (batch, decoder): F-CAM and GradCAM medians and their ratio."""
    upscalers = upscalers or ["unet", "unet-lite"]
    model = torchvision.models.resnet50(weights=None).to(device).eval()
    explainers = {}
    for name in upscalers:
        fc = FCAM(model, "layer4", cam="gradcam", upscaler=name)
        fc.fitted = True  # timing only: random decoder weights cost the same as trained ones
        explainers[name] = fc
    pgc = GradCAM(model=model, target_layers=[model.layer4])
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size, device=device)
        fns: dict[str, Callable[[], object]] = {
            "gradcam": lambda x=x: pgc(input_tensor=x, targets=None)
        }
        # The default map (with the seed CAM: cam_mix > 0) and the decoder alone (no backward).
        maps = {"default": {}, "decoder": {"cam_mix": 0.0, "cam_exponent": 0.0}}
        for name, fc in explainers.items():
            for kind, options in maps.items():
                fns[f"{name}@{kind}"] = lambda fc=fc, x=x, o=options: fc.explain(x, **o)
        med = _interleaved_medians(fns, device, warmup, repeats)
        for name, fc in explainers.items():
            for kind in maps:
                rows.append({
                    "device": str(device), "batch": batch, "upscaler": name, "map": kind,
                    "decoder_params": sum(p.numel() for p in fc.decoder.parameters()),
                    "fcam_ms": 1e3 * med[f"{name}@{kind}"], "gradcam_ms": 1e3 * med["gradcam"],
                    "ratio": med[f"{name}@{kind}"] / med["gradcam"],
                })
    return rows


def bench_fit(device: torch.device, n: int, batch: int, size: int, arch: str,
              repeats: int = 3) -> dict:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=5).to(device).eval()
    images = torch.randn(n, 3, size, size)
    labels = torch.randint(0, 5, (n,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch)

    fc = FCAM(model, "layer4", cam="gradcampp")

    def fit_epoch() -> None:
        fc.fit(loader, epochs=1, progress=False, device=device)

    decoder = FCAM(model, "layer4", cam="gradcampp").decoder.to(device).train()
    opt = torch.optim.SGD(decoder.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    names = [fc.pyramid.head.name] + [s.name for s in fc.pyramid.skips if s]
    from fcam.upscalers import capture_features

    def plain_epoch() -> None:
        for x, _ in loader:
            x = x.to(device)
            with torch.no_grad(), capture_features(model, names) as feats:
                model(x)
            logits = decoder(feats[names[0]], [feats[s.name] if s else None for s in fc.pyramid.skips],
                             (size, size))
            target = torch.zeros(x.shape[0], size, size, dtype=torch.long, device=device)
            loss = torch.nn.functional.cross_entropy(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    # Alternate the two and keep the best of each: the load of a shared machine comes and goes,
    # and a burst during one side's runs would otherwise show up as (negative) overhead.
    fit_times, plain_times = [], []
    for _ in range(repeats + 1):  # the first round warms up (allocations, imports)
        fit_times.append(_median_time(fit_epoch, device, 0, 1))
        plain_times.append(_median_time(plain_epoch, device, 0, 1))
    fit_s, plain_s = min(fit_times[1:]), min(plain_times[1:])
    return {
        "device": str(device), "arch": arch, "images": n, "batch": batch, "size": size,
        "fit_img_s": n / fit_s, "plain_img_s": n / plain_s, "overhead": fit_s / plain_s - 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--upscalers", nargs="+", default=["unet", "unet-lite"],
                        help="decoders to time (names of fcam.upscalers.available())")
    parser.add_argument("--target", type=float, default=0.4, help="target F-CAM / GradCAM time ratio")
    parser.add_argument("--fit-images", type=int, default=96,
                        help="images per fit epoch (several batches amortise per-call setup)")
    parser.add_argument("--fit-batch", type=int, default=16)
    parser.add_argument("--fit-size", type=int, default=128)
    parser.add_argument("--fit-arch", default="resnet18")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--skip-explain", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results: dict[str, list[dict]] = {"explain": [], "fit": []}
    for device in devices:
        batches = [] if args.skip_explain else args.batches
        rows = bench_explain(device, batches, args.size, args.warmup, args.repeats, args.upscalers)
        for row in rows:
            results["explain"].append(row)
            print(f"explain {row['device']:>5} batch {row['batch']:>3} {row['upscaler']:>10} "
                  f"map {row['map']:>7}: "
                  f"F-CAM {row['fcam_ms']:8.1f} ms, GradCAM {row['gradcam_ms']:8.1f} ms, "
                  f"ratio {row['ratio']:.2f}", flush=True)
        for batch in batches:
            same = [r for r in rows if r["batch"] == batch]
            parts = ", ".join(
                f"{r['upscaler']}@{r['map']} {r['ratio']:.2f} "
                f"({'ok' if r['ratio'] <= args.target else 'over'})"
                for r in same
            )
            print(f"summary {device.type:>5} batch {batch:>3}: GradCAM {same[0]['gradcam_ms']:.1f} ms; "
                  f"explain/GradCAM ratio {parts}; target <= {args.target:.2f}", flush=True)
        if not args.skip_fit:
            row = bench_fit(device, args.fit_images, args.fit_batch, args.fit_size, args.fit_arch,
                             args.repeats)
            results["fit"].append(row)
            print(f"fit     {row['device']:>5} {row['arch']} {row['size']}px: F-CAM {row['fit_img_s']:.2f} img/s, "
                  f"plain {row['plain_img_s']:.2f} img/s, overhead {100 * row['overhead']:.0f} %", flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
