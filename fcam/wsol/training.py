"""``train``: wsolevaluation's training recipe for every WSOL method, batched and seeded.

Per step (:func:`train_step`): the method's input change (HaS, CutMix), its forward
(:meth:`WSOLModel.forward_train`) and its loss:

========  =====================================================================
method    loss
========  =====================================================================
cam, adl  :math:`\\mathrm{CE}`
has       :math:`\\mathrm{CE}` on the hidden images (:func:`has`)
cutmix    :math:`\\lambda\\,\\mathrm{CE}(y_a) + (1-\\lambda)\\,\\mathrm{CE}(y_b)` with
          probability ``cutmix_prob``, plain CE otherwise (:func:`cutmix`)
acol      :math:`\\mathrm{CE}(A) + \\mathrm{CE}(B)` (:func:`acol_loss`)
spg       CE plus three masked BCE terms (:func:`spg_loss`)
eil,      :math:`\\mathrm{CE}(s_u) + \\sum_l \\mathrm{CE}(s_e^l)` over the unerased and erased
meil      streams (:func:`fcam.wsol.eil.eil_loss`)
danet     :math:`\\frac12\\sum_l \\mathrm{CE}_l + \\alpha\\,\\mathcal L_{cos}` (CE alone without a
          hierarchy; :func:`fcam.wsol.danet.danet_loss`)
spol      stage ``cam`` for ``epochs``, then stage ``seg`` for ``spol_seg_epochs``
          (:mod:`fcam.wsol.spol`)
cstn      :math:`-\\log p(y) + \\lambda_\\theta \\sum \\lVert I - \\theta \\rVert_F^2`
          (:mod:`fcam.wsol.cstn`)
========  =====================================================================

Optimiser: SGD (momentum 0.9, Nesterov, weight decay 1e-4) with the heads created by
:func:`build` at 10× the learning rate, as in wsolevaluation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcam.core.layers import first_conv_channels, model_logits
from fcam.core.progress import progress_bar
from fcam.core.validation import check_int, check_number
from fcam.explainer.batches import parse_batch
from fcam.wsol.acol import acol_loss
from fcam.wsol.adl import ADL
from fcam.wsol.augment import check_probability, cutmix, has
from fcam.wsol.danet import danet_loss
from fcam.wsol.eil import eil_loss
from fcam.wsol.model import WSOLModel, check_method
from fcam.wsol.spg import SPG_THRESHOLDS, spg_loss

__all__ = ["MethodOptions", "make_optimizer", "train", "train_step"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodOptions:
    """Training-time options of the methods (wsolevaluation's defaults).

    Attributes:
        has_grid_size: HaS patch side in pixels (4).
        has_drop_rate: HaS hiding probability (0.5).
        cutmix_beta: CutMix's Beta parameter (1.0).
        cutmix_prob: probability of mixing a batch (1.0).
        spg_thresholds: SPG's ``(high, low)`` pairs for B2, B1 and C.
        danet_alpha: weight :math:`\\alpha` of DANet's cosine loss (0.01, the reference script).
        danet_subset: ground-truth maps drawn into DANet's cosine loss (``None``: half of them
            with a hierarchy, as the reference's 1.5K of 3K; all K without).
        spol_low, spol_high, spol_shrink: :func:`fcam.wsol.spol_pseudo_mask`'s band and
            variance divisor (0.1, 0.5, 10).
        spol_foreground, spol_background: SPOL's mask cuts: foreground where the CAM or
            the Gaussian map exceeds ``spol_foreground``, background where the CAM is under
            ``spol_background``, the rest ignored (0.25, 0.01).
        spol_seg_epochs: epochs of SPOL's segmentation stage, run after the ``epochs`` of its
            CAM stage (``None``: as many as ``epochs``).
        cstn_theta_weight: CSTN's :math:`\\lambda_\\theta` (1e-4).
    """

    has_grid_size: int = 4
    has_drop_rate: float = 0.5
    cutmix_beta: float = 1.0
    cutmix_prob: float = 1.0
    spg_thresholds: tuple[tuple[float, float], ...] = SPG_THRESHOLDS
    danet_alpha: float = 0.01
    danet_subset: int | None = None
    spol_low: float = 0.1
    spol_high: float = 0.5
    spol_shrink: float = 10.0
    spol_foreground: float = 0.25
    spol_background: float = 0.01
    spol_seg_epochs: int | None = None
    cstn_theta_weight: float = 1e-4

    def __post_init__(self) -> None:
        check_int(self.has_grid_size, "has_grid_size", minimum=0)
        check_probability(self.has_drop_rate, "has_drop_rate")
        check_number(self.cutmix_beta, "cutmix_beta", positive=True)
        check_probability(self.cutmix_prob, "cutmix_prob")
        pairs = tuple(tuple(float(v) for v in pair) for pair in self.spg_thresholds)
        if len(pairs) != 3 or any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"spg_thresholds must be three (high, low) pairs, got {self.spg_thresholds!r}")
        for high, low in pairs:
            check_probability(high, "spg_thresholds")
            check_probability(low, "spg_thresholds")
        object.__setattr__(self, "spg_thresholds", pairs)
        check_number(self.danet_alpha, "danet_alpha", non_negative=True)
        if self.danet_subset is not None:
            check_int(self.danet_subset, "danet_subset", minimum=2)
        for name in ("spol_low", "spol_high", "spol_foreground", "spol_background"):
            check_probability(getattr(self, name), name)
        if self.spol_low > self.spol_high:
            raise ValueError(f"spol_low ({self.spol_low}) must not exceed spol_high ({self.spol_high})")
        check_number(self.spol_shrink, "spol_shrink", positive=True)
        if self.spol_seg_epochs is not None:
            check_int(self.spol_seg_epochs, "spol_seg_epochs")
        check_number(self.cstn_theta_weight, "cstn_theta_weight", non_negative=True)


#: Methods that train any classifier (the others need a model from :func:`fcam.wsol.build`).
_PLAIN = ("cam", "has", "cutmix")


def _check_model(model: nn.Module, method: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    if method not in _PLAIN:
        if not isinstance(model, WSOLModel) or model.method != method:
            have = model.method if isinstance(model, WSOLModel) else type(model).__name__
            raise ValueError(
                f"`method` {method!r} needs a model from fcam.wsol.build(model, {method!r}, ...), "
                f"got {have}"
            )
    elif isinstance(model, WSOLModel) and model.method not in _PLAIN:
        raise ValueError(f"`method` {method!r} does not fit a model built for {model.method!r}")


def make_optimizer(model: nn.Module, lr: float, momentum: float = 0.9,
                   weight_decay: float = 1e-4, head_lr_ratio: float = 10.0) -> torch.optim.SGD:
    """SGD with the new heads of a :class:`WSOLModel` at ``head_lr_ratio × lr``.

    Example:
        >>> opt = make_optimizer(nn.Linear(2, 2), lr=0.1)
        >>> [group["lr"] for group in opt.param_groups]
        [0.1]
    """
    check_number(lr, "lr", positive=True)
    check_number(head_lr_ratio, "head_lr_ratio", positive=True)
    heads = model.head_parameters() if isinstance(model, WSOLModel) else []
    head_ids = {id(p) for p in heads}
    base = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    groups = [{"params": base, "lr": lr}]
    if heads:
        groups.append({"params": heads, "lr": lr * head_lr_ratio})
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)


def _loss(model: nn.Module, images: Tensor, labels: Tensor, method: str, options: MethodOptions,
          generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """The method's loss and the logits of one batch."""
    if method == "has":
        images = has(images, options.has_grid_size, options.has_drop_rate, generator)
    if method == "cutmix" and options.cutmix_prob > 0 \
            and float(torch.rand((), generator=generator)) < options.cutmix_prob:
        mixed, labels_a, labels_b, lam = cutmix(images, labels, options.cutmix_beta, generator)
        logits = model_logits(model(mixed))
        loss = lam * F.cross_entropy(logits, labels_a) + (1 - lam) * F.cross_entropy(logits, labels_b)
        return loss, logits
    if method in ("spol", "cstn"):
        return model.training_loss(images, labels, options)  # type: ignore[operator]
    if method in ("acol", "spg", "eil", "meil", "danet"):
        out = model.forward_train(images, labels)  # type: ignore[operator]
        if method in ("eil", "meil"):
            return eil_loss(torch.cat([out["logits"], out["logits_erased"]]), labels), out["logits"]
        if method == "danet":
            return danet_loss(out, labels, model.heads, options.danet_alpha,  # type: ignore[arg-type]
                              options.danet_subset, generator), out["logits"]
        if method == "acol":
            return acol_loss(out, labels), out["logits"]
        return spg_loss(out, labels, options.spg_thresholds, images.shape[-2:]), out["logits"]
    logits = model_logits(model(images))
    return F.cross_entropy(logits, labels), logits


def train_step(model: nn.Module, images: Tensor, labels: Tensor, method: str,
               optimizer: torch.optim.Optimizer, generator: torch.Generator | None = None,
               options: MethodOptions | None = None) -> tuple[float, Tensor]:
    """One SGD step of ``method`` (model in training mode); returns ``(loss, logits)``.

    Example:
        >>> built = build(torchvision.models.resnet18(weights=None), "has", 3)   # doctest: +SKIP
        >>> opt = make_optimizer(built, lr=0.01)                                 # doctest: +SKIP
        >>> loss, _ = train_step(built, images, labels, "has", opt)              # doctest: +SKIP

    Raises:
        FloatingPointError: the loss is NaN or infinite.
    """
    loss, logits = _loss(model, images, labels, method, options or MethodOptions(), generator)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{method}: the training loss became {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), logits.detach()


def _set_adl_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    for module in model.modules():
        if isinstance(module, ADL):
            module.generator = generator


def train(
    model: nn.Module,
    loader: Iterable[Any],
    method: str,
    epochs: int = 1,
    lr: float = 0.01,
    device: str | torch.device | None = None,
    progress: bool = True,
    *,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    head_lr_ratio: float = 10.0,
    seed: int = 0,
    max_steps: int | None = None,
    **method_options: Any,
) -> list[dict[str, float]]:
    """Train ``model`` with a WSOL method (recipe in the module docstring).

    Example:
        >>> from fcam.wsol import build
        >>> built = build(torchvision.models.resnet18(weights=None), "cutmix", num_classes=2)
        >>> batches = [(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))]
        >>> history = train(built, batches, "cutmix", epochs=1, lr=0.01, progress=False)
        >>> sorted(history[0])
        ['accuracy', 'epoch', 'loss', 'seconds', 'steps']

    Args:
        model: a :class:`WSOLModel` from :func:`build` (``cam``, ``has`` and ``cutmix`` also
            accept any classifier returning logits).
        loader: batches of ``(images, labels, ...)`` or dicts with ``image`` and ``label``.
        method: one of :func:`available`.
        epochs: passes over ``loader``.
        lr: base learning rate (heads get ``head_lr_ratio × lr``).
        device: where to train (the model stays there); ``None``: the model's device.
        progress: show a tqdm bar.
        momentum, weight_decay, head_lr_ratio: SGD options (0.9, 1e-4, 10).
        seed: seed of the method's random draws (HaS, CutMix, ADL).
        max_steps: stop after this many steps in total, per stage for SPOL (``None``: full
            epochs).
        **method_options: fields of :class:`MethodOptions` (``has_grid_size``, ...).

    Returns:
        One dict per epoch: ``epoch``, ``loss`` (mean), ``accuracy`` (% on the training
        batches), ``steps`` and ``seconds``; SPOL adds ``stage`` (1: CAM, 2: segmentation;
        ``accuracy`` is the frozen class net's in stage 2).

    Raises:
        TypeError, ValueError: unknown method or option, a model that does not fit the method,
            batches without labels.
        FloatingPointError: the loss became NaN or infinite.
    """
    key = check_method(method)
    options = MethodOptions(**method_options)
    check_int(epochs, "epochs")
    check_number(lr, "lr", positive=True)
    if max_steps is not None:
        check_int(max_steps, "max_steps")
    _check_model(model, key)
    if device is not None:
        model.to(torch.device(device))
    param = next(model.parameters())
    optimizer = make_optimizer(model, lr, momentum, weight_decay, head_lr_ratio)
    generator = torch.Generator().manual_seed(seed)
    channels = first_conv_channels(model)
    num_classes = getattr(model, "num_classes", None)
    history: list[dict[str, float]] = []
    steps_done = 0
    plan: list[str | None] = [None] * epochs
    if key == "spol":
        plan = [*["cam"] * epochs, *["seg"] * (options.spol_seg_epochs or epochs)]
    current = plan[0]
    if current is not None:
        model.stage = current  # type: ignore[assignment]  # SPOLModel.stage
    total = None if not hasattr(loader, "__len__") else len(plan) * len(loader)  # type: ignore[arg-type]
    bar = progress_bar(total=total, enabled=progress, desc=f"wsol {key}", unit="step")
    model.train()
    _set_adl_generator(model, generator)
    try:
        for epoch, stage in enumerate(plan):
            if stage != current:  # SPOL: the next stage, max_steps counts again
                current, steps_done = stage, 0
                model.stage = stage  # type: ignore[assignment]
            if max_steps is not None and steps_done >= max_steps:
                continue
            start, losses, correct, seen, steps = time.perf_counter(), 0.0, 0, 0, 0
            for raw in loader:
                batch = parse_batch(raw, channels, num_classes)
                if batch.labels is None:
                    raise ValueError("loader: WSOL training needs labels in every batch")
                images = batch.images.to(param.device, param.dtype)
                labels = batch.labels.to(param.device)
                loss, logits = train_step(model, images, labels, key, optimizer, generator, options)
                losses += loss * labels.shape[0]
                correct += int((logits.argmax(1) == labels).sum())
                seen += labels.shape[0]
                steps += 1
                steps_done += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses / seen:.3f}")
                if max_steps is not None and steps_done >= max_steps:
                    break
            if seen == 0:
                raise ValueError("loader is empty")
            record = {"epoch": float(epoch + 1), "loss": losses / seen,
                      "accuracy": 100.0 * correct / seen, "steps": float(steps),
                      "seconds": time.perf_counter() - start}
            if stage is not None:
                record["stage"] = 1.0 if stage == "cam" else 2.0
            history.append(record)
            logger.info("wsol %s epoch %d: loss %.4f, accuracy %.1f%%", key, epoch + 1,
                        record["loss"], record["accuracy"])
    finally:
        _set_adl_generator(model, None)
        bar.close()
        model.eval()
    if not math.isfinite(history[-1]["loss"]):
        raise FloatingPointError(f"{key}: non-finite training loss")
    return history
