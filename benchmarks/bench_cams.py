"""Time fcam's extractors against pytorch-grad-cam (pgc) on the same model and inputs.

Each timed call produces normalised maps at input resolution for the same targets:
``extractor.explain(images, targets)`` for fcam and ``cam(input_tensor, targets)`` for pgc
(both: forward, backward or masked passes, weights, ReLU, resize, min-max). After one
warm-up call each, the two are timed in alternation ``--repeats`` times; the median (or
``--stat min``) is reported with the ratio fcam/pgc.

Usage::

    python benchmarks/bench_cams.py                                  # resnet50, 224 px, batch 1 and 32
    python benchmarks/bench_cams.py --batch-sizes 1 8 --repeats 3 --methods gradcam gradcampp
    python benchmarks/bench_cams.py --model resnet18 --size 64 --methods scorecam

Needs the test extra (``pip install grad-cam``). Score-CAM runs one forward pass per
channel (2048 for resnet50's layer4), so on a CPU prefer a small model/size for it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytorch_grad_cam as pgc
import torch
import torchvision
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from fcam import cams

PAIRS: dict[str, tuple[str, type]] = {
    "gradcam": ("gradcam", pgc.GradCAM),
    "gradcampp": ("gradcampp", pgc.GradCAMPlusPlus),
    "xgradcam": ("xgradcam", pgc.XGradCAM),
    "layercam": ("layercam", pgc.LayerCAM),
    "scorecam": ("scorecam", pgc.ScoreCAM),
}
LAST_STAGE = {"resnet": "layer4", "vgg": "features", "densenet": "features", "convnext": "features"}


def timed_pair(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int, device: torch.device, stat: str
) -> tuple[float, float]:
    """Time two callables in alternation (so load drifts hit both alike); return their stat."""
    ours()  # warm-up: allocator, cudnn autotune, lazy init
    theirs()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in zip((ours, theirs), samples):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            bucket.append(time.perf_counter() - start)
    reduce = statistics.median if stat == "median" else min
    return reduce(samples[0]), reduce(samples[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--layer", default=None, help="dotted target layer (default: last stage)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda if present")
    parser.add_argument("--score-batch-size", type=int, default=32, help="Score-CAM chunk size (both libraries)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="how to summarise the repeats (min is steadier on a loaded machine)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    torch.manual_seed(0)
    base = getattr(torchvision.models, args.model)(weights=None).eval()
    layer_name = args.layer or next(v for k, v in LAST_STAGE.items() if args.model.startswith(k))

    print(f"model={args.model} layer={layer_name} size={args.size} repeats={args.repeats} stat={args.stat} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    header = f"{'device':6} {'method':10} {'batch':>5} {'fcam ms':>10} {'pgc ms':>10} {'fcam/pgc':>9}"
    print(header)
    print("-" * len(header))
    for device_name in devices:
        device = torch.device(device_name)
        model = base.to(device)
        layer = dict(model.named_modules())[layer_name]
        for batch in args.batch_sizes:
            images = torch.randn(batch, 3, args.size, args.size, device=device)
            targets = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(batch)).tolist()
            pgc_targets = [ClassifierOutputTarget(t) for t in targets]
            for method in args.methods:
                ours_name, theirs_cls = PAIRS[method]
                options = {"batch_size": args.score_batch_size} if method == "scorecam" else {}
                ours = cams.create(ours_name, model, layer_name, **options)

                def run_pgc(cls: type = theirs_cls, score: bool = method == "scorecam",
                            model: torch.nn.Module = model, layer: torch.nn.Module = layer,
                            images: torch.Tensor = images, pgc_targets: Any = pgc_targets) -> object:
                    # Built per call: pgc registers its hooks at construction and would
                    # otherwise keep them (and their per-forward copies) during fcam's calls.
                    with cls(model=model, target_layers=[layer]) as cam:
                        if score:
                            cam.batch_size = args.score_batch_size
                        return cam(input_tensor=images, targets=pgc_targets)

                def run_ours(ours: Any = ours, images: torch.Tensor = images,
                             targets: Any = targets) -> object:
                    return ours.explain(images, targets)

                fcam_s, pgc_s = timed_pair(run_ours, run_pgc, args.repeats, device, args.stat)
                model.zero_grad(set_to_none=True)  # pgc accumulates parameter grads
                print(f"{device_name:6} {method:10} {batch:>5} {fcam_s * 1e3:>10.1f} {pgc_s * 1e3:>10.1f} "
                      f"{fcam_s / pgc_s:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
