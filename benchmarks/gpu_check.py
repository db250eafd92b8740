"""One command that checks every CUDA path of fcam and measures its GPU figures.

GPU time is short and every start of a GPU machine costs minutes of it, so everything runs in
one call and every step is recorded even when an earlier one fails:

1. ``tests``: ``pytest -m cuda`` (the CUDA twins of the device tests: extractors,
   ``FCAM.fit/explain/save/load``, the F-CAM loss, seeds, the CRF, metrics, overlays and every
   WSOL method; see tests/conftest.py);
2. ``amp``: F-CAM fitted on the demo's synthetic set with ``amp=True`` and in float32 from
   the same decoder initialisation and seed; PxAP of both, the maps' difference, the
   throughput of each (images/s) and its peak GPU memory;
3. ``ddp``: ``torchrun --nproc_per_node 1`` on NCCL (gloo on the CPU) fits F-CAM, and its
   losses must equal the single-process fit's to 1e-4 relative;
4. ``syncs``: host synchronisations per training step, counted with CUDA's sync debug mode;
5. ``explain``: ``FCAM.explain`` against pytorch-grad-cam's ``GradCAM`` on ResNet-50 at
   224 px, batch 1, 16 and 64 (benchmarks/bench_explain.py's interleaved medians);
6. ``runtime``: the seed's runtime table (benchmarks/runtime_table.py, when present).

It writes ``summary.json`` and ``summary.md`` to ``--out`` and exits non-zero when a step
failed or a figure is missed. ``--device cpu`` runs the same steps on tiny sizes as a smoke
test (the test step is skipped there: the CPU twins run in the normal suite); CI runs it.

Usage::

    python benchmarks/gpu_check.py --device cuda --out gpu-check     # meant to take < 8 min on an H100
    python benchmarks/gpu_check.py --device cpu --out /tmp/smoke      # 1-2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from fcam import FCAM
from fcam.data import SyntheticWSOL
from fcam.evaluation import evaluate_localization, fcam_map_fn

logger = logging.getLogger("gpu_check")

#: Figures of the GPU check (the seed's ratios; AMP speed-up and agreement).
TARGETS = {"explain_ratio_b1": 0.67, "explain_ratio_b64": 0.4, "amp_speedup": 1.5,
           "amp_pxap_delta": 1.0, "ddp_rel": 1e-4}


@dataclass
class Sizes:
    """Problem sizes: the GPU run's, or the CPU smoke test's."""

    image: int
    n_train: int
    n_test: int
    classifier_epochs: int
    fcam_images: int
    fcam_epochs: int
    batch: int
    explain_size: int
    explain_batches: tuple[int, ...]
    repeats: int

    @classmethod
    def for_device(cls, device: torch.device, smoke: bool) -> Sizes:
        if smoke:
            return cls(64, 48, 16, 1, 16, 1, 8, 64, (1, 2), 1)
        # The demo's data (128 px, its classifier); F-CAM on 600 images, 3 epochs, as `fcam demo`.
        return cls(128, 1500, 300, 6, 600, 3, 32, 224, (1, 16, 64), 10)


# ----------------------------------------------------------------------------- steps
def step_tests(out: Path, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """``pytest -m cuda``: every CUDA twin; fails on any failure or error."""
    if device.type != "cuda":
        return {"skipped": "the CPU twins run in the normal test suite"}
    report = out / "pytest-cuda.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
           f"--junitxml={report}", str(ROOT / "tests")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    (out / "pytest-cuda.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
    result = {"returncode": proc.returncode, "summary": tail[0]}
    if proc.returncode != 0:
        raise RuntimeError(f"pytest -m cuda failed: {tail[0]} (log: pytest-cuda.log)")
    return result


def _demo_data(sizes: Sizes) -> tuple[SyntheticWSOL, SyntheticWSOL]:
    train = SyntheticWSOL(sizes.n_train, size=sizes.image, seed=0, split="train")
    test = SyntheticWSOL(sizes.n_test, size=sizes.image, seed=0, split="test")
    return train, test


def _classifier(device: torch.device, sizes: Sizes) -> torch.nn.Module:
    # Benchmarks may use the demo's building blocks; the library's layers may not.
    from fcam.demo import ClassifierConfig, train_classifier

    config = ClassifierConfig(image_size=sizes.image, n_train=sizes.n_train, data_seed=0,
                              epochs=sizes.classifier_epochs, seed=0)
    return train_classifier(config, device=device, progress=False).to(device).eval()


def _fit(model: torch.nn.Module, train: SyntheticWSOL, device: torch.device, sizes: Sizes,
         amp: bool) -> tuple[FCAM, dict[str, float]]:
    torch.manual_seed(0)
    fc = FCAM(model, "layer4", cam="gradcampp", seed=0)
    loader = DataLoader(Subset(train, range(sizes.fcam_images)), batch_size=sizes.batch,
                        shuffle=False, pin_memory=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    history = fc.fit(loader, epochs=sizes.fcam_epochs, device=device, amp=amp, progress=False)
    seconds = sum(h["seconds"] for h in history[1:]) or history[0]["seconds"]  # epoch 1 warms up
    images = sum(h["images"] for h in history[1:]) or history[0]["images"]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return fc, {"img_per_s": images / seconds, "peak_mib": peak, "loss": history[-1]["loss"]}


def step_amp(out: Path, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """float32 vs AMP fits from the same start: PxAP, map difference, throughput, memory."""
    train, test = _demo_data(sizes)
    model = _classifier(device, sizes)
    kinds = [False, True] if device.type == "cuda" else [False]
    result: dict[str, Any] = {}
    maps = {}
    x = torch.stack([test[i]["image"] for i in range(min(32, len(test)))]).to(device)
    for amp in kinds:
        fc, stats = _fit(model, train, device, sizes, amp)
        scores = evaluate_localization(fcam_map_fn(fc), model, DataLoader(test, batch_size=50),
                                       device=device, progress=False)
        name = "amp" if amp else "float32"
        result[name] = {**stats, "pxap": scores.pxap, "maxboxacc_v2": scores.maxboxacc_v2}
        with torch.no_grad():
            maps[name] = fc.explain(x)
    if "amp" in result:
        result["speedup"] = result["amp"]["img_per_s"] / result["float32"]["img_per_s"]
        result["pxap_delta"] = result["amp"]["pxap"] - result["float32"]["pxap"]
        diff = (maps["amp"] - maps["float32"]).abs()
        result["map_abs_diff_mean"] = float(diff.mean())
        result["map_abs_diff_max"] = float(diff.max())
        result["met"] = bool(result["speedup"] >= TARGETS["amp_speedup"]
                             and abs(result["pxap_delta"]) <= TARGETS["amp_pxap_delta"])
    else:
        result["amp"] = "skipped: amp=True needs CUDA"
    return result


def _ddp_fit(device: torch.device, sizes: Sizes) -> list[float]:
    """The fit compared across the two runs: fixed data, no shuffle, per-epoch mean loss."""
    torch.manual_seed(0)
    train, _ = _demo_data(Sizes(**{**vars(sizes), "n_train": sizes.fcam_images}))
    model = _classifier(device, sizes) if sizes.classifier_epochs else None
    assert model is not None
    fc = FCAM(model, "layer4", cam="gradcampp", seed=0)
    loader: DataLoader[Any]
    if torch.distributed.is_initialized():
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(train, shuffle=False)
        loader = DataLoader(train, batch_size=sizes.batch, sampler=sampler)
    else:
        loader = DataLoader(train, batch_size=sizes.batch, shuffle=False)
    history = fc.fit(loader, epochs=2, device=device, progress=False)
    return [h["loss"] for h in history]


def ddp_worker(args: argparse.Namespace) -> None:
    """Entry point of the torchrun process: the same fit, under DistributedDataParallel."""
    backend = "nccl" if args.device == "cuda" else "gloo"
    torch.distributed.init_process_group(backend)
    try:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local) if args.device == "cuda" else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        losses = _ddp_fit(device, Sizes.for_device(device, args.smoke))
        if torch.distributed.get_rank() == 0:
            Path(args.ddp_out).write_text(json.dumps({"backend": backend, "losses": losses}))
    finally:
        torch.distributed.destroy_process_group()


def step_ddp(out: Path, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """torchrun with one process vs the plain fit: equal losses (relative 1e-4)."""
    target = out / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
           "--master_port", str(29500 + os.getpid() % 1000), str(Path(__file__).resolve()),
           "--ddp-worker", "--device", device.type, "--ddp-out", str(target)]
    if sizes.explain_size < 224:
        cmd.append("--smoke")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    (out / "ddp.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited with {proc.returncode} (log: ddp.log)")
    ddp = json.loads(target.read_text())
    single = _ddp_fit(device, sizes)
    rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ddp["losses"], single, strict=True))
    return {"backend": ddp["backend"], "ddp_losses": ddp["losses"], "single_losses": single,
            "max_rel_diff": rel, "met": rel <= TARGETS["ddp_rel"]}


def step_syncs(out: Path, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """Host synchronisations per F-CAM training step (CUDA's sync debug mode counts them)."""
    if device.type != "cuda":
        return {"skipped": "host synchronisations exist on CUDA only"}
    train, _ = _demo_data(Sizes(**{**vars(sizes), "n_train": 4 * sizes.batch}))
    model = _classifier(device, sizes)
    fc = FCAM(model, "layer4", cam="gradcampp", seed=0)
    loader = DataLoader(train, batch_size=sizes.batch)
    fc.fit(loader, epochs=1, device=device, progress=False)  # warm-up (allocator, cudnn)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fc.fit(loader, epochs=1, device=device, progress=False)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    sites: dict[str, int] = {}
    for w in caught:
        if "synchroniz" in str(w.message):
            key = f"{Path(w.filename).name}:{w.lineno}"
            sites[key] = sites.get(key, 0) + 1
    steps = len(loader)
    return {"steps": steps, "syncs_per_step": sum(sites.values()) / steps,
            "sites": dict(sorted(sites.items(), key=lambda kv: -kv[1]))}


def step_explain(out: Path, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """FCAM.explain vs pytorch-grad-cam GradCAM, ResNet-50, interleaved medians."""
    from bench_explain import bench_explain

    rows = bench_explain(device, list(sizes.explain_batches), sizes.explain_size, warmup=2,
                         repeats=sizes.repeats, upscalers=["unet"])
    table = {f"batch {r['batch']} ({r['map']})": {k: r[k] for k in ("fcam_ms", "gradcam_ms", "ratio")}
             for r in rows}
    default = {r["batch"]: r["ratio"] for r in rows if r["map"] == "default"}
    result: dict[str, Any] = {"rows": table}
    if device.type == "cuda":
        result["met"] = bool(default.get(1, 9) <= TARGETS["explain_ratio_b1"]
                             and default.get(64, 9) <= TARGETS["explain_ratio_b64"])
    return result


def step_runtime(out: Path, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """The seed's runtime table (benchmarks/runtime_table.py), when the script exists."""
    script = HERE / "runtime_table.py"
    if not script.is_file():
        return {"skipped": "benchmarks/runtime_table.py is not in this checkout"}
    target = out / "runtime_table.json"
    cmd = [sys.executable, str(script), "--device", device.type, "--json", str(target)]
    if sizes.explain_size < 224:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    (out / "runtime_table.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"runtime_table.py exited with {proc.returncode} (log: runtime_table.log)")
    return {"json": target.name, "table": proc.stdout.strip().splitlines()[-40:]}


STEPS: dict[str, Callable[[Path, torch.device, Sizes], dict[str, Any]]] = {
    "tests": step_tests, "amp": step_amp, "ddp": step_ddp, "syncs": step_syncs,
    "explain": step_explain, "runtime": step_runtime,
}


# ----------------------------------------------------------------------------- summary
def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """``summary.json`` and a Markdown rendering of it, ``summary.md``."""
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    lines = [f"# GPU check: {summary['device_name']}", "",
             f"torch {summary['torch']}, fcam {summary['fcam']}, {summary['date']}", "",
             "| step | status | seconds | figure met |", "|---|---|---:|---|"]
    for name, step in summary["steps"].items():
        met = step.get("result", {}).get("met", "") if isinstance(step.get("result"), dict) else ""
        lines.append(f"| {name} | {step['status']} | {step['seconds']:.1f} | {met} |")
    for name, step in summary["steps"].items():
        lines += ["", f"## {name}", "", "```json",
                  json.dumps(step.get("result", step.get("error")), indent=1, default=str), "```"]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, default=Path("gpu-check"))
    parser.add_argument("--steps", nargs="+", choices=list(STEPS), default=list(STEPS))
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (implied by --device cpu)")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ddp-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.device == "cpu":
        args.smoke = True
    if args.ddp_worker:
        ddp_worker(args)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu for the smoke test)")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes throughout
    sizes = Sizes.for_device(device, args.smoke)
    args.out.mkdir(parents=True, exist_ok=True)
    import fcam

    summary: dict[str, Any] = {
        "device_name": _device_name(device), "torch": torch.__version__, "fcam": fcam.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "smoke": args.smoke, "sizes": vars(sizes),
        "targets": TARGETS, "steps": {},
    }
    failed = []
    for name in args.steps:
        tic = time.perf_counter()
        logger.info("step %s ...", name)
        try:
            result = STEPS[name](args.out, device, sizes)
            status = "ok" if result.get("met", True) else "figure missed"
            summary["steps"][name] = {"status": status, "result": result}
        except Exception as exc:  # noqa: BLE001 - one failing step must not hide the others
            summary["steps"][name] = {"status": "FAILED", "error": f"{type(exc).__name__}: {exc}",
                                      "traceback": traceback.format_exc()}
            status = "FAILED"
        summary["steps"][name]["seconds"] = time.perf_counter() - tic
        if status != "ok":
            failed.append(name)
        logger.info("step %s: %s (%.1f s)", name, status, summary["steps"][name]["seconds"])
        write_summary(args.out, summary)  # after every step: a cut-off run keeps what it had
    print((args.out / "summary.md").read_text(encoding="utf-8"))
    return 1 if failed else 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        sys.exit(main())
