"""Benchmark the F-CAM losses against a resnet50 training step, and the CRF's scaling.

Table 1: milliseconds per batch (forward + backward through the logits) of each loss at
``--batch`` x ``--size``², next to a torchvision resnet50 forward + backward on the same batch,
measured in the same run (CPU, and CUDA when available). Targets: CRF <= 3 % and all
three losses <= 5 % of the resnet50 step on CPU.

Table 2: the dense-CRF loss (forward + backward, one image) at 112², 224², 448², 896²: time
and peak memory, for the path the loss chooses (``auto``) and for each fast path forced
(``--paths``): the low-rank path costs O(N · R) with a rank R that grows like (size / σ_xy)²,
the 5-D grid O(N) for a fixed σ_xy, which is why the loss switches to the grid above R = 32.
Peak memory is the increase of the process's peak resident set size over the resident size
just before the call (Linux: the peak, ``VmHWM``, is reset through
``/proc/self/clear_refs`` first, so import-time peaks do not hide it; each size runs in a fresh
subprocess). It includes the inputs' autograd buffers (softmax output, gradients). On CUDA it is
``torch.cuda.max_memory_allocated`` above the inputs.

Threads: ``--threads 1`` (default) is the stable setting on a shared, loaded machine. With
several threads each small tensor op pays an OpenMP synchronisation cost that explodes when the
cores are oversubscribed (measured: the CRF went from ~13 % to ~100 % of the resnet50 step at
2 threads under a load average of 11), while the large convolutions of resnet50 are barely
affected.

Example::

    python benchmarks/bench_losses.py                     # full: batch 32 at 224², 1 thread
    python benchmarks/bench_losses.py --batch 4 --sizes 112 224 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fcam.losses import DenseCRFLoss, SeedLoss, SizeLoss, sample_seeds


def _images(batch: int, size: int, device: torch.device) -> torch.Tensor:
    """Natural images (scikit-image samples, if installed) resized, cycled over the batch."""
    try:
        from skimage import data

        raw = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
        pics = [torch.tensor(x[..., :3], dtype=torch.float32).permute(2, 0, 1)[None] for x in raw]
    except ImportError:  # smooth random colour fields instead
        gen = torch.Generator().manual_seed(0)
        pics = [torch.rand(1, 3, 8, 8, generator=gen) * 255 for _ in range(4)]
    pics = [F.interpolate(p, size=(size, size), mode="bilinear", align_corners=False) for p in pics]
    stack = torch.cat([pics[i % len(pics)] for i in range(batch)]).clamp(0, 255)
    return stack.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _loss_step(loss_fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor) -> None:
    logits.grad = None
    loss_fn(logits).backward()


def table_losses(batch: int, size: int, device: torch.device, repeats: int) -> None:
    import torchvision

    images = _images(batch, size, device)
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(batch, 2, size, size, device=device, generator=gen, requires_grad=True)
    cams = torch.rand(batch, 1, size // 32, size // 32, device=device, generator=gen)
    cams = F.interpolate(cams, size=(size, size), mode="bilinear", align_corners=False)
    cams = (cams - cams.amin((2, 3), keepdim=True)) / (
        cams.amax((2, 3), keepdim=True) - cams.amin((2, 3), keepdim=True))
    seeds = sample_seeds(cams, generator=gen)
    crf, seed, size_loss = DenseCRFLoss(), SeedLoss(), SizeLoss()

    model = torchvision.models.resnet50(weights=None).to(device).train()
    inputs = (images / 255 - 0.45) / 0.225
    targets = torch.randint(0, 1000, (batch,), device=device, generator=gen)

    def resnet_step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()

    rows = {
        "resnet50 fwd+bwd": _time_ms(resnet_step, device, repeats),
        "sample_seeds": _time_ms(lambda: sample_seeds(cams, generator=gen), device, repeats),
        "SeedLoss": _time_ms(lambda: _loss_step(lambda z: seed(z, seeds), logits), device,
                             repeats),
        "DenseCRFLoss": _time_ms(
            lambda: _loss_step(lambda z: crf(images, torch.softmax(z, 1)), logits), device,
            repeats),
        "SizeLoss": _time_ms(lambda: _loss_step(lambda z: size_loss(torch.softmax(z, 1)),
                                                logits), device, repeats),
    }
    rows["all three losses"] = rows["SeedLoss"] + rows["DenseCRFLoss"] + rows["SizeLoss"]
    rows["all three + sample_seeds"] = rows["all three losses"] + rows["sample_seeds"]
    ref = rows["resnet50 fwd+bwd"]
    print(f"\n## Losses, batch {batch} x {size}², {device.type}, "
          f"{torch.get_num_threads()} thread(s), best of {repeats}")
    print("| step | ms / batch | % of resnet50 step |")
    print("|---|---:|---:|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.1f} | {100 * ms / ref:.2f} % |")


def _force_path(path: str) -> None:
    """Make the CRF take one fast path whatever the rank ("auto": its own choice)."""
    import fcam.losses.crf as crf_module

    if path == "grid":
        crf_module._LOWRANK_MAX_RANK = 0
    elif path == "lowrank":
        crf_module._LOWRANK_MAX_RANK = 10**9


def _auto_path(size: int) -> str:
    import fcam.losses.crf as crf_module
    from fcam.losses.bilateral import spatial_rank

    rank = spatial_rank(size, size, 100.0, crf_module._LOWRANK_TOL)
    return f"low-rank (R={rank})" if rank <= crf_module._LOWRANK_MAX_RANK else "5-D grid"


def _measure_crf(size: int, device_name: str, repeats: int, path: str) -> dict[str, float]:
    """Run in a fresh process: time and peak memory of one CRF fwd+bwd on one image."""
    _force_path(path)
    device = torch.device(device_name)
    images = _images(1, size, device)
    logits = torch.randn(1, 2, size, size, device=device, requires_grad=True)
    crf = DenseCRFLoss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset VmHWM (peak RSS) to the current RSS
        base = _proc_status_kib("VmRSS")
    ms = _time_ms(lambda: _loss_step(lambda z: crf(images, torch.softmax(z, 1)), logits), device,
                  repeats)
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak_mib = (_proc_status_kib("VmHWM") - base) / 1024
    return {"size": size, "ms": ms, "peak_mib": peak_mib}


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status (Linux only)")


def table_scaling(sizes: list[int], device: torch.device, repeats: int, threads: int,
                  paths: list[str]) -> None:
    print(f"\n## DenseCRFLoss scaling (σ_rgb 15, σ_xy 100, 1 image, fwd+bwd, {device.type})")
    print("| path | size | pixels | ms | ms / Mpixel | peak MiB | MiB / Mpixel |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        for size in sizes:
            cmd = [sys.executable, __file__, "--_measure", str(size), "--device", device.type,
                   "--repeats", str(repeats), "--threads", str(threads), "--_path", path]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            mpix = size * size / 1e6
            label = f"auto: {_auto_path(size)}" if path == "auto" else path
            print(f"| {label} | {size}² | {size * size} | {row['ms']:.1f} | "
                  f"{row['ms'] / mpix:.0f} | {row['peak_mib']:.1f} | "
                  f"{row['peak_mib'] / mpix:.0f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--sizes", type=int, nargs="*", default=[112, 224, 448, 896])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is the most stable on a shared machine)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu, then cuda)")
    parser.add_argument("--skip-losses", action="store_true")
    parser.add_argument("--paths", nargs="+", default=["auto", "lowrank", "grid"],
                        choices=["auto", "lowrank", "grid"],
                        help="CRF fast paths of the scaling table (auto: the loss's own choice)")
    parser.add_argument("--_measure", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_path", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args._measure is not None:
        print(json.dumps(_measure_crf(args._measure, args.device or "cpu", args.repeats,
                                      args._path)))
        return
    devices = [args.device] if args.device else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for name in devices:
        device = torch.device(name)
        if not args.skip_losses:
            table_losses(args.batch, args.size, device, args.repeats)
        if args.sizes:
            table_scaling(args.sizes, device, args.repeats, args.threads, args.paths)


if __name__ == "__main__":
    main()
