"""F-CAM's training loop: epochs, DistributedDataParallel, AMP, checkpoints and exact resume.

The classifier stays frozen (:func:`fcam.core.state.frozen`); only the decoder learns, with
SGD at the published settings. Per step: the seed CAM and the feature pyramid from one
classifier forward, seeds sampled from the CAM, the decoder's logits, and the three losses.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fcam.core.progress import progress_bar
from fcam.core.state import frozen, model_dtype
from fcam.core.validation import check_int, check_number
from fcam.explainer.batches import as_rgb, parse_batch, raw_rgb
from fcam.explainer.checkpoint import CHECKPOINT_NAME, read_checkpoint, write_checkpoint
from fcam.explainer.config import CRF_REFERENCE_PIXELS
from fcam.explainer.meter import EpochMeter
from fcam.explainer.selection import collapse_alert, validate
from fcam.losses import sample_seeds

if TYPE_CHECKING:
    from fcam.explainer.fcam import FCAM

__all__ = [
    "DEFAULT_LR", "DEFAULT_LR_SCHEDULE", "LR_SCHEDULES", "TrainOptions", "Trainer",
    "check_lr_schedule", "epoch_lr", "rng_state", "set_rng_state",
]

logger = logging.getLogger(__name__)

_PARTS = ("seed", "crf", "size")
#: Values of :attr:`TrainOptions.lr_schedule`.
LR_SCHEDULES = ("constant", "cosine")
#: Default learning rate and schedule of :meth:`fcam.FCAM.fit`: 3× the paper's constant 0.01,
#: annealed to near zero over the run. At fit's 10 epochs the paper's constant rate leaves the
#: maps still growing towards the objects at the end and the result depends on the last few
#: steps; cosine at 0.03 scored higher on both tuned domains for both decoder seeds (0.05 and
#: 0.1 lower again). Measurements in docs/concepts/fcam.md.
DEFAULT_LR = 0.03
DEFAULT_LR_SCHEDULE = "cosine"


def check_lr_schedule(schedule: str) -> str:
    """``schedule`` if it is one of :data:`LR_SCHEDULES`, else a ``ValueError`` naming
    ``lr_schedule``."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    return schedule


def epoch_lr(lr: float, epoch: int, epochs: int, schedule: str = "constant") -> float:
    r"""Learning rate of the 0-based ``epoch`` of ``epochs``.

    ``"cosine"`` anneals once over the run, per epoch: :math:`lr \cdot \tfrac12 (1 + \cos(\pi
    e / E))`, so the first epoch trains at ``lr`` and the last at :math:`lr \cdot \tfrac12 (1 -
    \cos(\pi / E))`. A function of the epoch alone, so a resumed run follows the same rates.

    Example:
        >>> epoch_lr(0.01, 0, 10, "cosine"), round(epoch_lr(0.01, 5, 10, "cosine"), 6)
        (0.01, 0.005)
    """
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"schedule must be one of {LR_SCHEDULES}, got {schedule!r}")


@dataclass(frozen=True)
class TrainOptions:
    r"""Options of :meth:`fcam.FCAM.fit` that are not saved with the model.

    Attributes:
        epochs: total number of epochs (including those restored with ``resume``).
        lr: SGD learning rate (of the first epoch with ``"cosine"``; the paper: 0.01, constant).
        momentum, nesterov, weight_decay: SGD options (paper: 0.9, True, 1e-4).
        amp: float16 autocast for the decoder (CUDA only).
        progress: show a tqdm bar (rank 0).
        on_epoch_start: called with the 0-based epoch index before each epoch.
        val_loader: validation batches (:func:`fcam.explainer.selection.parse_val_batch`),
            scored after every epoch.
        select_by: ``"pxap"`` keeps the decoder of the epoch with the best validation PxAP
            (``val_loader`` must then carry masks); ``None`` only reports the scores.
        lr_schedule: ``"cosine"`` (default) or ``"constant"`` (the published run): epoch
            :math:`e` of :math:`E` trains at :math:`lr \cdot \tfrac12 (1 + \cos(\pi e / E))`
            (:func:`epoch_lr`).
    """

    epochs: int = 10
    lr: float = DEFAULT_LR
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    amp: bool = False
    progress: bool = True
    on_epoch_start: Callable[[int], Any] | None = None
    val_loader: Iterable[Any] | None = None
    select_by: str | None = "pxap"
    lr_schedule: str = DEFAULT_LR_SCHEDULE

    def __post_init__(self) -> None:
        check_lr_schedule(self.lr_schedule)
        if self.select_by not in ("pxap", None):
            raise ValueError(f"select_by must be 'pxap' or None, got {self.select_by!r}")
        if self.val_loader is not None and not isinstance(self.val_loader, Iterable):
            raise TypeError(f"val_loader must be iterable, got {type(self.val_loader).__name__}")
        check_int(self.epochs, "epochs")
        check_number(self.lr, "lr", positive=True)
        check_number(self.momentum, "momentum", non_negative=True)
        check_number(self.weight_decay, "weight_decay", non_negative=True)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def rng_state() -> dict[str, Any]:
    """Global torch / Python / NumPy (and CUDA) RNG states, storable with ``weights_only``."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(checkpoint_dir: str | os.PathLike[str] | None, resume: bool) -> Path | None:
    """``checkpoint_dir / CHECKPOINT_NAME`` after checking the folder is writable.

    Raises:
        ValueError: ``resume`` without a folder, or a folder that cannot be written.
    """
    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume=True needs checkpoint_dir")
        return None
    folder = Path(checkpoint_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".fcam-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"checkpoint_dir {str(folder)!r} is not writable: {exc}") from None
    return folder / CHECKPOINT_NAME


class Trainer:
    """One :meth:`fcam.FCAM.fit` run: owns the optimiser, scaler, generator and DDP wrapper.

    Args:
        fc: the explainer whose decoder is trained.
        options: the run's :class:`TrainOptions`.
        device: where to train (the model and decoder are moved there for the run).
        ckpt: the per-epoch checkpoint file, or ``None``.
    """

    def __init__(self, fc: FCAM, options: TrainOptions, device: torch.device, ckpt: Path | None) -> None:
        if options.amp and device.type != "cuda":
            raise ValueError(f"amp=True needs a CUDA device, got device {device}")
        self.fc, self.options, self.device, self.ckpt = fc, options, device, ckpt
        self.rank = _rank()
        self.distributed = dist.is_available() and dist.is_initialized()
        fc.model.to(device)
        fc.decoder.to(device)
        fc.loss.to(device)
        self.decoder: nn.Module = fc.decoder
        if self.distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.decoder = DistributedDataParallel(fc.decoder, device_ids=ids)
        params = [p for p in fc.decoder.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(
            params, lr=options.lr, momentum=options.momentum, nesterov=options.nesterov,
            weight_decay=options.weight_decay,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=options.amp)
        self.gen = torch.Generator(device=device)
        # Normalisation statistics made once on the device, not copied there every step.
        self.mean = torch.tensor(fc.config.mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(fc.config.std, dtype=torch.float32, device=device)
        self.gen.manual_seed(fc.config.seed + self.rank)
        self.show = options.progress and self.rank == 0
        self.best: dict[str, Any] | None = None

    # ------------------------------------------------------------------ run
    def run(self, loader: Iterable[Any], resume: bool) -> list[dict[str, float]]:
        """Train for the remaining epochs; return the full history."""
        start, history = 0, list[dict[str, float]]()
        if resume and self.ckpt is not None and self.ckpt.is_file():
            start, history = self._restore(self.ckpt)
            self.fc.history = history
            logger.info("resumed from %s at epoch %d", self.ckpt, start)
        elif resume:
            logger.info("resume=True but no checkpoint in %s: starting from scratch", self.ckpt)
        with frozen(self.fc.model):
            self.decoder.train()
            for epoch in range(start, self.options.epochs):
                history.append(self._guarded_epoch(loader, epoch))
                self.fc.history = history
                self._log_collapse(history)
                self._save(epoch + 1)
        if self.best is not None:
            self.fc.decoder.load_state_dict(self.best["decoder"])
            logger.info(
                "kept the decoder of epoch %d (validation PxAP %.2f)", self.best["epoch"], self.best["pxap"]
            )
        return history

    def _log_collapse(self, history: list[dict[str, float]]) -> None:
        warn, message = collapse_alert(history, self.options.epochs)
        if warn:
            logger.warning("epoch %d: %s", len(history), message)
        elif message:
            logger.info("epoch %d: %s (not warned: early epochs often recover)", len(history), message)

    def _guarded_epoch(self, loader: Iterable[Any], epoch: int) -> dict[str, float]:
        """One epoch plus its validation; on any failure (NaN loss, a loader error, Ctrl-C)
        the decoder, optimiser, loss schedule, generator and ``fitted`` go back to the last
        completed epoch, so a later ``save()`` equals the last checkpoint on disk."""
        snapshot, fitted = self._snapshot(), self.fc.fitted
        try:
            if self.options.on_epoch_start is not None:
                self.options.on_epoch_start(epoch)
            stats = self._epoch(loader, epoch)
            stats["t"] = float(self.fc.loss.step() or 0.0)
            self.fc.fitted = True
            self._score(stats, epoch)
        except BaseException:
            self._rollback(snapshot)
            self.fc.fitted = fitted
            raise
        logger.info(
            "epoch %d/%d: loss %.4f (seed %.4f, crf %.4f, size %.4f), foreground %.1f%% "
            "(seed CAM %.1f%%), %d images, lr %.3g, %.1fs",
            epoch + 1, self.options.epochs, stats["loss"], stats["seed"], stats["crf"],
            stats["size"], 100 * stats["fg_share"], 100 * stats["cam_fg_share"],
            stats["images"], stats["lr"], stats["seconds"],
        )
        return stats

    def _score(self, stats: dict[str, float], epoch: int) -> None:
        """Validation scores into ``stats``; remember the best decoder when selecting."""
        if self.options.val_loader is None:
            return
        select = self.options.select_by == "pxap"
        # Validation batches may draw from the global RNGs (a synthetic or augmenting dataset);
        # restoring them keeps a selecting fit on the same trajectory as a plain one.
        rngs = rng_state()
        try:
            stats.update(validate(self.fc, self.options.val_loader, need_masks=select))
        finally:
            set_rng_state(rngs)
        if select and (self.best is None or stats["val_pxap"] > self.best["pxap"]):
            state = {k: v.detach().clone() for k, v in self.fc.decoder.state_dict().items()}
            self.best = {"epoch": epoch + 1, "pxap": stats["val_pxap"], "decoder": state}

    def _epoch(self, loader: Iterable[Any], epoch: int) -> dict[str, float]:
        lr = epoch_lr(self.options.lr, epoch, self.options.epochs, self.options.lr_schedule)
        for group in self.opt.param_groups:
            group["lr"] = lr
        meter = EpochMeter(_PARTS, epoch)
        tic = time.perf_counter()
        total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
        desc = f"F-CAM {epoch + 1}/{self.options.epochs}"
        bar = progress_bar(loader, enabled=self.show, total=total, desc=desc, leave=False)
        for batch in bar:
            self._step(batch, epoch, meter)
            if self.show and meter.due():  # the running means: one host read per interval
                bar.set_postfix({k: f"{v:.4g}" for k, v in meter.means().items()})
        bar.close()
        if meter.steps == 0:
            raise ValueError("loader is empty (it yielded no batch)")
        stats = meter.means()
        share_t, cam_share_t = meter.shares()
        stats.update(
            epoch=float(epoch + 1), lr=lr, images=float(meter.images),
            seconds=time.perf_counter() - tic, fg_share=float(share_t.mean()),
            fg_share_std=float(share_t.std(unbiased=False)), cam_fg_share=float(cam_share_t.mean()),
        )
        return stats

    def _step(self, batch: Any, epoch: int, meter: EpochMeter) -> None:
        """One SGD step, recorded in ``meter`` without a host sync: the loss, its parts, the
        batch size and the per-image foreground shares of the decoder's maps and of the seed
        CAM (both thresholded at 0.5). A non-finite term raises before the optimiser step."""
        fc, cfg = self.fc, self.fc.config
        parsed = parse_batch(batch, fc.in_channels, fc.num_classes)
        images = parsed.images.to(self.device, model_dtype(fc.model), non_blocking=True)
        labels = None if parsed.labels is None else parsed.labels.to(self.device, non_blocking=True)
        raw = None if parsed.raw is None else parsed.raw.to(self.device, non_blocking=True)
        cam, feats = fc.cam_and_features(images, labels)
        rgb = raw_rgb(images, raw, self.mean, self.std)
        seeds = sample_seeds(cam, generator=self.gen, images=rgb, **vars(cfg.seeds))
        size = (int(images.shape[-2]), int(images.shape[-1]))
        with torch.autocast(self.device.type, enabled=self.options.amp):
            logits = fc.decode(self.decoder, feats, size)
        # Size-normalised CRF weight, on the pixels the CRF actually sees (crf_scale).
        pixels = size[0] * size[1] * cfg.crf_scale**2
        fc.loss.crf.weight = cfg.crf_weight * (CRF_REFERENCE_PIXELS / pixels) ** 2
        total, parts = fc.loss(logits.float(), seeds, as_rgb(rgb))
        with torch.no_grad():
            share = (logits.detach().float().softmax(1)[:, 1] > 0.5).float().mean((1, 2))
            cam_share = (cam > 0.5).float().mean((1, 2))
        meter.add(total, parts, images.shape[0], share, cam_share)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.opt)
        self.scaler.update()

    # ------------------------------------------------------------------ rollback
    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy({
            "decoder": self.fc.decoder.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loss": self.fc.loss.state_dict(),
            "generator": self.gen.get_state(),
        })  # fmt: skip

    def _rollback(self, snapshot: Mapping[str, Any]) -> None:
        self.fc.decoder.load_state_dict(snapshot["decoder"])
        self.opt.load_state_dict(snapshot["optimizer"])
        self.scaler.load_state_dict(snapshot["scaler"])
        self.fc.loss.load_state_dict(snapshot["loss"])
        self.gen.set_state(snapshot["generator"])
        logger.info("epoch failed: decoder, optimiser and history rolled back to the last epoch")

    # ------------------------------------------------------------------ checkpoints
    def _save(self, epoch: int) -> None:
        if self.ckpt is None:
            return
        if self.rank == 0:
            payload = self.fc.payload()
            payload["train"] = {
                "epoch": epoch,
                "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(),
                "loss": self.fc.loss.state_dict(),
                "t": self.fc.loss.size.t,
                "generator": self.gen.get_state(),
                "rng": rng_state(),
                "best": self.best,
            }
            write_checkpoint(payload, self.ckpt)
        if self.distributed:
            dist.barrier()

    def _restore(self, path: Path) -> tuple[int, list[dict[str, float]]]:
        payload = read_checkpoint(path)
        if "train" not in payload:
            raise ValueError(f"checkpoint {str(path)!r} holds no training state to resume from")
        self.fc.check_compatible(payload, path)
        self.fc.decoder.load_state_dict(payload["decoder"])
        self.fc.decoder.to(self.device)
        train = payload["train"]
        self.opt.load_state_dict(train["optimizer"])
        self.scaler.load_state_dict(train["scaler"])
        self.fc.loss.load_state_dict(train["loss"])
        self.gen.set_state(train["generator"])
        set_rng_state(train["rng"])
        self.best = train.get("best")
        self.fc.fitted = True
        return int(train["epoch"]), list(payload.get("history", []))
