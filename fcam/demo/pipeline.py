"""The ``fcam demo`` job: synthetic data -> classifier -> F-CAM -> WSOL metrics -> report.

Steps (each with a progress bar):

1. generate the train and test splits of :class:`~fcam.data.SyntheticWSOL`;
2. train a torchvision ResNet from scratch on the train split (cached, see
   :func:`~fcam.demo.train_classifier`);
3. for every seed CAM method, fit F-CAM on the train split (also cached);
4. evaluate the interpolated CAM (bilinear upsampling, then min-max normalisation) and the
   F-CAM foreground probability on the test split (GT-known, in the image frame):
   PxAP, MaxBoxAccV2, MaxBoxAcc (v1) and top-1 localisation;
5. print the table and write ``results.json``, ``results.md``, per-image overlays, a
   comparison grid (image, ground truth, interpolated CAM, F-CAM) and the HTML evaluation
   report (``report/index.html``, :func:`fcam.evaluation.write_report`) to the output folder.

Example:
    >>> from fcam.demo import DemoConfig, run_demo
    >>> result = run_demo(DemoConfig.quick(out_dir="fcam-demo"))   # doctest: +SKIP
    >>> print(result.table)                                        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from fcam import __version__
from fcam.core.constants import IMAGENET_MEAN, IMAGENET_STD
from fcam.core.io import atomic_write_text
from fcam.core.progress import progress_bar
from fcam.data.synthetic import SyntheticWSOL
from fcam.demo.cache import cache_dir
from fcam.demo.classifier import (
    evaluate_accuracy,
    save_classifier,
    train_classifier,
)
from fcam.demo.config import DEMO_CAMS, TARGET_LAYER, DemoConfig
from fcam.demo.report import format_table, gain_lines, results_json, write_png
from fcam.evaluation import (
    LocalizationScores,
    cam_map_fn,
    evaluate_localization,
    fcam_map_fn,
)

__all__ = ["DEMO_CAMS", "DemoConfig", "DemoResult", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        rows: ``{method label: scores}``, interpolated and F-CAM rows alternating.
        table: the plain-text table (as printed by the CLI).
        gains: one line per CAM method with the F-CAM gain.
        classifier_accuracy: test top-1 accuracy of the classifier (percent).
        files: written files by role (``json``, ``markdown``, ``grid``, ``overlays``, ...).
        timings: wall seconds per step.
    """

    rows: dict[str, LocalizationScores]
    table: str
    gains: list[str]
    classifier_accuracy: float
    files: dict[str, Any]
    timings: dict[str, float]


def _device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be a torch device such as 'cpu', got {device!r}") from None


def _fit_fcam(
    model: nn.Module, cam: str, train: SyntheticWSOL, config: DemoConfig, device: torch.device
) -> Any:
    from fcam import FCAM

    path = cache_dir() / "fcam" / f"{cam}-{config.fcam_key(cam)}.pt"
    if config.cache and path.is_file():
        logger.info("loading cached F-CAM (%s) from %s", cam, path)
        explainer = FCAM.load(path, model)
        return explainer.to(device) if hasattr(explainer, "to") else explainer
    torch.manual_seed(config.seed)
    explainer = FCAM(model, target_layer=TARGET_LAYER, cam=cam, **config.fcam_options)
    subset = Subset(train, range(min(config.fcam_train, len(train))))
    loader = DataLoader(
        subset,
        batch_size=config.fcam_batch_size,
        shuffle=True,
        drop_last=len(subset) > config.fcam_batch_size,
        generator=torch.Generator().manual_seed(config.seed),
    )
    explainer.fit(
        loader,
        epochs=config.fcam_epochs,
        device=device,
        progress=config.progress,
        **({} if config.fcam_lr is None else {"lr": config.fcam_lr}),
    )
    if config.cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        explainer.save(path)
    return explainer


def _write_visuals(
    maps: dict[str, torch.Tensor], test: SyntheticWSOL, n: int, out_dir: Path
) -> dict[str, Any]:
    from fcam.viz import comparison_grid, overlay

    items = [test[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    overlays = []
    for label, batch_maps in maps.items():
        slug = label.lower().replace(" + ", "-").replace("+", "p").replace(" ", "-")
        for i, it in enumerate(items):
            path = out_dir / "overlays" / f"{i:02d}-{slug}.png"
            overlays.append(str(write_png(path, overlay(it["raw"], batch_maps[i]))))
    grid_path = out_dir / "comparison_grid.png"
    comparison_grid(
        images,
        maps,
        gt=torch.stack([it["mask"].float() for it in items]),
        boxes=torch.stack([it["box"] for it in items]),
        path=grid_path,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        tile_size=max(160, test.size),
    )
    return {"grid": str(grid_path), "overlays": overlays}


def _make_data(config: DemoConfig) -> tuple[SyntheticWSOL, SyntheticWSOL]:
    """The train and test splits, with the images F-CAM and the evaluation use drawn up front
    (SyntheticWSOL caches them)."""
    train = SyntheticWSOL(config.n_train, size=config.image_size, seed=config.seed, split="train")
    test = SyntheticWSOL(config.n_test, size=config.image_size, seed=config.seed, split="test")
    logger.info("data: %s / %s", train, test)
    for dataset, count in ((train, min(config.fcam_train, config.n_train)), (test, config.n_test)):
        for i in progress_bar(
            range(count),
            enabled=config.progress,
            desc=f"generate {dataset.split}",
            leave=False,
            unit="img",
        ):
            dataset.sample(i)
    return train, test


@dataclass
class _Run:
    """What the per-method steps of :func:`run_demo` share and fill in."""

    config: DemoConfig
    device: torch.device
    model: nn.Module
    train: SyntheticWSOL
    test: SyntheticWSOL
    out_dir: Path
    timings: dict[str, float]
    rows: dict[str, LocalizationScores] = dataclasses.field(default_factory=dict)
    pairs: list[tuple[str, LocalizationScores, LocalizationScores]] = dataclasses.field(
        default_factory=list
    )
    shown: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    # Every test map per producer, on the CPU, for the report (None: no report).
    recorded: dict[str, list[torch.Tensor]] | None = None
    checkpoints: dict[str, Path] = dataclasses.field(default_factory=dict)

    def evaluate(
        self, map_fn: Any, label: str, show: tuple[torch.Tensor, torch.Tensor] | None
    ) -> LocalizationScores:
        tick = time.perf_counter()
        plain = map_fn
        if self.recorded is not None:
            parts = self.recorded[label] = []

            def recording(images: torch.Tensor, labels: torch.Tensor, inner: Any = map_fn) -> Any:
                maps = inner(images, labels)
                parts.append(maps.detach().float().cpu())
                return maps

            map_fn = recording
        scores = evaluate_localization(
            map_fn,
            self.model,
            DataLoader(self.test, batch_size=self.config.eval_batch_size),
            device=self.device,
            cam_curve_interval=self.config.cam_curve_interval,
            progress=self.config.progress,
            desc=f"evaluate {label}",
        )
        if show is not None:
            self.shown[label] = plain(*show).cpu()
        self.timings[f"evaluate {label}"] = time.perf_counter() - tick
        return scores

    def method(self, cam: str, show: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Interpolated CAM, F-CAM fitted on it, and both evaluations."""
        from fcam import cams as cam_methods

        name = DEMO_CAMS.get(cam, cam)
        with cam_methods.create(cam, self.model, TARGET_LAYER) as extractor:
            base = self.evaluate(cam_map_fn(extractor), name, show)
        tick = time.perf_counter()
        explainer = _fit_fcam(self.model, cam, self.train, self.config, self.device)
        self.timings[f"fit F-CAM ({name})"] = time.perf_counter() - tick
        self.checkpoints[cam] = self.out_dir / f"fcam-{cam}.pt"
        explainer.save(self.checkpoints[cam])
        fitted = self.evaluate(fcam_map_fn(explainer), f"{name} + F-CAM", show)
        self.rows[name] = base
        self.rows[f"{name} + F-CAM"] = fitted
        self.pairs.append((name, base, fitted))


def _write_html_report(run: _Run, accuracy: float) -> Path | None:
    """``out_dir/report/index.html`` from the recorded test maps (the same maps as the table)."""
    from fcam.core import model_logits
    from fcam.evaluation import write_report

    assert run.recorded is not None
    batches = list(DataLoader(run.test, batch_size=run.config.eval_batch_size))
    with torch.no_grad():
        logits = torch.cat([model_logits(run.model(b["image"].to(run.device)), None).cpu()
                            for b in batches])
    meta = {"model": "resnet18 (trained from scratch by the demo)", "layer": TARGET_LAYER,
            "data": f"SyntheticWSOL test split, seed {run.config.seed}",
            "classifier accuracy": f"{accuracy:.1f} %"}
    for cam, path in run.checkpoints.items():
        meta[f"checkpoint ({cam})"] = f"{path.name} sha256 {_sha256(path)}"
    return write_report(
        run.out_dir / "report", torch.cat([b["image"] for b in batches]),
        masks=torch.cat([b["mask"] for b in batches]).float(),
        boxes=[box[None] for b in batches for box in b["box"]],
        maps={label: torch.cat(parts) for label, parts in run.recorded.items()},
        title="fcam demo: interpolated CAMs against F-CAM", meta=meta,
        labels=torch.cat([b["label"] for b in batches]), logits=logits,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, cam_curve_interval=run.config.cam_curve_interval,
    )


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_reports(run: _Run, accuracy: float, files: dict[str, Any]) -> list[str]:
    """results.json and results.md; returns the gain lines."""
    config = run.config
    gains = gain_lines(run.pairs)
    meta = {
        "fcam_version": __version__,
        "config": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()
        },
        "device": str(run.device),
        "classifier_accuracy": accuracy,
        "interpolation": "bilinear upsampling of the layer4 CAM, then per-image min-max",
        "fcam_maps": "foreground probability of the F-CAM decoder (not min-max normalised)",
        "timings_s": run.timings,
    }
    files["json"] = str(
        atomic_write_text(run.out_dir / "results.json", results_json(run.rows, meta))
    )
    summary = (
        f"Synthetic WSOL test split: {config.n_test} images of {config.image_size} px; resnet18 "
        f"from scratch (test accuracy {accuracy:.1f}%); metrics in percent, GT-known class maps, "
        f"cam_curve_interval {config.cam_curve_interval}."
    )
    gains_md = "\n".join(f"- {line}" for line in gains)
    markdown = "\n\n".join(
        ["# fcam demo results", summary, format_table(run.rows, markdown=True), gains_md]
    )
    files["markdown"] = str(atomic_write_text(run.out_dir / "results.md", markdown + "\n"))
    return gains


def run_demo(config: DemoConfig | None = None) -> DemoResult:
    """Run the whole demo (see the module docstring) and write its outputs.

    Args:
        config: settings; ``DemoConfig()`` by default.

    Returns:
        The results table, gains, files written and step timings.
    """
    config = config or DemoConfig()
    config.validate()
    device = _device(config.device)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    train, test = _make_data(config)
    timings["data"] = time.perf_counter() - t0

    tick = time.perf_counter()
    model = train_classifier(
        config.classifier_config(), device=device, cache=config.cache, progress=config.progress
    )
    model.requires_grad_(False)
    accuracy = evaluate_accuracy(model, test, progress=config.progress)
    save_classifier(model, out_dir / "classifier.pt", arch="resnet18", image_size=config.image_size)
    timings["classifier"] = time.perf_counter() - tick
    logger.info("classifier test accuracy %.1f%%", accuracy)

    run = _Run(config, device, model, train, test, out_dir, timings)
    if config.report:
        from fcam.evaluation.figures import MATPLOTLIB_MISSING, require_matplotlib

        try:
            require_matplotlib()
            run.recorded = {}
        except ImportError:
            logger.warning("skipping report/: %s", MATPLOTLIB_MISSING)
    n_show = min(config.num_examples, len(test))
    show = None
    if n_show:
        items = [test[i] for i in range(n_show)]
        show = (
            torch.stack([it["image"] for it in items]).to(device),
            torch.tensor([it["label"] for it in items], device=device),
        )
    for cam in config.cams:
        run.method(cam, show)
    files: dict[str, Any] = {
        "classifier": str(out_dir / "classifier.pt"),
        "fcam": {cam: str(p) for cam, p in run.checkpoints.items()},
    }
    if n_show:
        files.update(_write_visuals(run.shown, test, n_show, out_dir))
    if run.recorded is not None:
        tick = time.perf_counter()
        files["report"] = str(_write_html_report(run, accuracy))
        timings["report"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - t0
    gains = _write_reports(run, accuracy, files)
    return DemoResult(run.rows, format_table(run.rows), gains, accuracy, files, timings)
