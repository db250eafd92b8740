"""Model selection and fit diagnostics: validation PxAP, a mask-free score, collapse warnings.

The WSOL protocol allows a few annotated images per class (wsolevaluation's ``train-fullsup``
split) for model selection. :meth:`fcam.FCAM.fit` takes them as ``val_loader``: after every
epoch the decoder's maps are scored with PxAP and the best epoch's decoder is kept.
:func:`grid_search` uses the same split to choose loss weights.

Without masks the history still carries a mask-free criterion, the classifier's average drop
in confidence when only the map's foreground is kept (:func:`fcam.metrics.average_drop`,
lower is better), and every epoch reports the foreground share of the maps so a collapse is
visible (and logged) instead of silent.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from fcam.core.targets import parse_targets
from fcam.core.validation import check_images
from fcam.metrics import MaskEvaluator, average_drop

if TYPE_CHECKING:
    from fcam.explainer.fcam import FCAM

__all__ = [
    "ValBatch", "collapse_alert", "collapse_warning", "grid_search", "parse_val_batch", "validate",
]

logger = logging.getLogger(__name__)

#: Below this mean foreground share the maps have collapsed to background.
COLLAPSE_LOW = 0.01
#: Above this mean foreground share the maps have collapsed to foreground.
COLLAPSE_HIGH = 0.95


@dataclass(frozen=True)
class ValBatch:
    """One validation batch: images, labels (or ``None``) and ``(B, H, W)`` masks (or ``None``)."""

    images: Tensor
    labels: Tensor | None
    masks: Tensor | None


def parse_val_batch(batch: Any, channels: int, num_classes: int) -> ValBatch:
    """Accept ``(images, labels, masks)`` / ``(images, labels)`` tuples or dicts with
    ``"image"``, ``"label"`` and ``"mask"``; masks are ``(B, H, W)`` in {0, 1}.

    Raises:
        TypeError, ValueError: naming ``val_loader`` and what is wrong.
    """
    if isinstance(batch, Mapping):
        images, labels, masks = batch.get("image"), batch.get("label"), batch.get("mask")
    elif isinstance(batch, Sequence) and not isinstance(batch, str) and 2 <= len(batch) <= 3:
        images, labels, masks = batch[0], batch[1], (batch[2] if len(batch) == 3 else None)
    else:
        raise TypeError(
            "val_loader must yield (images, labels, masks) tuples or dicts with 'image', "
            f"'label' and 'mask'; got {type(batch).__name__}"
        )
    images = check_images(images, channels, "val_loader images")
    labels = parse_targets(labels, images.shape[0], num_classes, "val_loader labels")
    if masks is not None:
        if not isinstance(masks, Tensor):
            raise TypeError(f"val_loader masks must be tensors, got {type(masks).__name__}")
        expected = (images.shape[0], *images.shape[-2:])
        if masks.ndim == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if tuple(masks.shape) != expected:
            raise ValueError(
                f"val_loader masks must be (B, H, W) = {expected} like the images, got "
                f"{tuple(masks.shape)}"
            )
        if not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError("val_loader masks must hold only 0 and 1")
        masks = masks.bool()
    return ValBatch(images, labels, masks)


def validate(fc: FCAM, val_loader: Iterable[Any], need_masks: bool) -> dict[str, float]:
    """Score the current decoder on ``val_loader``.

    Returns:
        ``{"val_pxap": ..., "val_avg_drop": ...}`` (PxAP only when the batches carry masks).

    Raises:
        ValueError: an empty ``val_loader``, or one without masks when ``need_masks``.
    """
    evaluator = MaskEvaluator(cam_curve_interval=0.01)
    drops: list[Tensor] = []
    with_masks = 0
    device = next(fc.decoder.parameters()).device
    dtype = next(fc.decoder.parameters()).dtype
    for batch in val_loader:
        parsed = parse_val_batch(batch, fc.in_channels, fc.num_classes)
        images = parsed.images.to(device, dtype)
        labels = None if parsed.labels is None else parsed.labels.to(device)
        # The labelled class, as the WSOL protocol localises it (matters when the map mixes in the
        # seed CAM: cam_mix or cam_exponent > 0).
        maps = fc.explain(images, labels)
        if parsed.masks is not None:
            evaluator.update(maps, parsed.masks.to(device))
            with_masks += 1
        drops.append(_avg_drop(fc.model, images, maps, labels))
    if not drops:
        raise ValueError("val_loader is empty")
    if need_masks and with_masks == 0:
        raise ValueError("val_loader yields no masks, but PxAP selection needs them (select_by='pxap')")
    scores = {"val_avg_drop": float(torch.cat(drops).mean())}
    if with_masks:
        scores["val_pxap"] = evaluator.compute().value
    return scores


def _avg_drop(model: nn.Module, images: Tensor, maps: Tensor, labels: Tensor | None) -> Tensor:
    result = average_drop(model, images, maps, labels, reduction="none")
    assert isinstance(result, Tensor)
    return result.detach().float().cpu()


def collapse_warning(stats: Mapping[str, float]) -> str | None:
    """The warning an epoch's foreground statistics call for, or ``None``.

    Example:
        >>> collapse_warning({"fg_share": 0.99, "cam_fg_share": 0.2})[:40]
        'F-CAM maps collapsed to all-foreground ('
    """
    share, cam = stats["fg_share"], stats["cam_fg_share"]
    if share < COLLAPSE_LOW:
        return (
            f"F-CAM maps collapsed to all-background (foreground share {share:.1%}); lower "
            "crf_weight, raise seed_weight, or select epochs with val_loader"
        )
    if share > COLLAPSE_HIGH:
        return (
            f"F-CAM maps collapsed to all-foreground (foreground share {share:.1%}); check that "
            "mean/std match the loader's normalisation, lower crf_weight, or use val_loader"
        )
    if share > max(2.5 * cam, cam + 0.3):
        return (
            f"F-CAM foreground ({share:.1%} of the image) is far larger than the seed CAM's "
            f"({cam:.1%}); the maps may follow background edges: lower crf_weight or select "
            "epochs with val_loader"
        )
    return None


def collapse_alert(
    history: Sequence[Mapping[str, float]], epochs: int, patience: int = 3
) -> tuple[bool, str | None]:
    """``(warn, message)`` for the newest epoch of ``history``, a fit of ``epochs`` epochs.

    ``message`` is its :func:`collapse_warning` (``None`` when healthy). The decoder starts every
    map at a 25 % foreground prior and the seeds first pull it towards the background, so a
    healthy fit often reads "all-background" for an epoch or two before the maps grow back. A
    warning that fires on healthy runs teaches users to ignore it, so ``warn`` is only true
    when the condition holds at the last epoch or for ``patience`` epochs in a row. The streak
    is read from ``history`` itself, so a resumed fit counts the epochs it restored.

    Example:
        >>> bad = {"fg_share": 0.0, "cam_fg_share": 0.3}
        >>> collapse_alert([bad], epochs=10)[0]            # transient so far
        False
        >>> collapse_alert([bad, bad, bad], epochs=10)[0]  # three in a row
        True
    """
    message = collapse_warning(history[-1])
    if message is None:
        return False, None
    streak = 0
    for stats in reversed(history[-(patience + 1):]):
        if collapse_warning(stats) is None:
            break
        streak += 1
    return len(history) >= epochs or streak == patience, message


def grid_search(
    model: nn.Module,
    loader: Iterable[Any],
    val_loader: Iterable[Any],
    grid: Mapping[str, Sequence[Any]],
    *,
    fcam_options: Mapping[str, Any] | None = None,
    **fit_options: Any,
) -> tuple[FCAM, list[dict[str, Any]]]:
    """Fit one F-CAM per combination of ``grid`` options; keep the best by validation PxAP.

    Example:
        >>> best, table = grid_search(model, loader, val_loader,            # doctest: +SKIP
        ...     {"crf_weight": [1e-8, 3e-8], "size_weight": [0.05, 0.1]},
        ...     fcam_options={"target_layer": "layer4", "cam": "gradcampp"}, epochs=5)

    Args:
        model: the classifier.
        loader: training batches (as for :meth:`fcam.FCAM.fit`).
        val_loader: batches with masks (as for ``fit(val_loader=...)``).
        grid: option name -> values; names are :class:`fcam.explainer.FCAMConfig` options.
        fcam_options: fixed constructor arguments (``target_layer``, ``cam``, other options).
        **fit_options: passed to every :meth:`fcam.FCAM.fit`.

    Returns:
        The best fitted :class:`fcam.FCAM` and one row per combination (options, best PxAP).

    Raises:
        ValueError: an empty grid.
    """
    from fcam.explainer.fcam import FCAM

    if not grid or any(len(v) == 0 for v in grid.values()):
        raise ValueError(f"grid must map option names to non-empty value lists, got {dict(grid)!r}")
    names = list(grid)
    best: FCAM | None = None
    rows: list[dict[str, Any]] = []
    for values in itertools.product(*(grid[n] for n in names)):
        options = {**dict(fcam_options or {}), **dict(zip(names, values, strict=True))}
        fc = FCAM(model, **options)
        history = fc.fit(loader, val_loader=val_loader, **fit_options)
        score = max(h["val_pxap"] for h in history)
        rows.append({**dict(zip(names, values, strict=True)), "val_pxap": score})
        logger.info("grid %s: best val PxAP %.2f", rows[-1], score)
        if best is None or score > max(r["val_pxap"] for r in rows[:-1]):
            best = fc
    assert best is not None
    return best, rows
