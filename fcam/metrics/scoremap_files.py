"""Evaluating score maps saved as ``.npy`` files, as wsolevaluation's ``evaluation.py`` does.

Layout (wsolevaluation ``inference.py`` / ``CamDataset``): the map of image ``a/b.jpg`` is
``<scoremap_root>/a/b.jpg.npy`` (``np.save`` on the image id). The form without the image
extension (``a/b.npy``), which wsolevaluation's README describes, is accepted too. Maps are 2-D
float arrays in ``[0, 1]`` in the evaluation frame (``size x size``, 224 in the protocol).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from fcam.core.io import atomic_write_bytes
from fcam.data.wsol_datasets import WSOLDataset
from fcam.metrics.box_accuracy import BoxEvaluator, BoxResult
from fcam.metrics.pxap import MaskEvaluator, MaskResult
from fcam.metrics.scoremaps import ArrayLike, as_maps

__all__ = ["evaluate_scoremap_dir", "save_scoremaps"]


def _scoremap_path(root: Path, image_id: str) -> Path:
    primary = root / f"{image_id}.npy"
    if primary.is_file():
        return primary
    fallback = root / PurePosixPath(image_id).with_suffix(".npy")
    if fallback.is_file():
        return fallback
    raise FileNotFoundError(
        f"no score map for image_id {image_id!r}: tried {primary} and {fallback}"
    )


def save_scoremaps(
    scoremap_root: str | os.PathLike[str], image_ids: Sequence[str], maps: ArrayLike
) -> list[Path]:
    """Save one ``<image_id>.npy`` float32 map per image (atomically), wsolevaluation-style.

    Args:
        scoremap_root: output folder; sub-folders follow the image ids.
        image_ids: ids, one per map.
        maps: ``(N, H, W)`` maps in ``[0, 1]``.

    Returns:
        The files written.

    Example:
        >>> save_scoremaps("scoremaps", ["val/a.jpg"], torch.rand(1, 32, 32))
        [PosixPath('scoremaps/val/a.jpg.npy')]
        >>> np.load("scoremaps/val/a.jpg.npy").shape
        (32, 32)
    """
    arrays = as_maps(maps).float().cpu().numpy()
    if len(image_ids) != len(arrays):
        raise ValueError(f"got {len(image_ids)} image_ids for {len(arrays)} maps")
    written = []
    for image_id, array in zip(image_ids, arrays, strict=True):
        rel = PurePosixPath(image_id)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"image_id must be a relative path, got {image_id!r}")
        path = Path(scoremap_root) / f"{image_id}.npy"
        buffer = io.BytesIO()
        np.save(buffer, array)
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def evaluate_scoremap_dir(
    scoremap_root: str | os.PathLike[str],
    metadata: str | os.PathLike[str],
    *,
    mask_root: str | os.PathLike[str] | None = None,
    size: int = 224,
    version: int = 2,
    cam_curve_interval: float = 0.001,
) -> BoxResult | MaskResult:
    """wsolevaluation's ``evaluate_wsol``: score saved maps against a split's annotations.

    Box splits (CUB, ILSVRC) give MaxBoxAcc (``version``); mask splits (OpenImages) give PxAP
    and need ``mask_root``. Only annotations are read, never the images.

    Args:
        scoremap_root: folder of ``.npy`` maps (see the module docstring).
        metadata: the split's metadata folder.
        mask_root: root of the mask paths (mask splits).
        size: the evaluation frame; every map must be ``size x size``.
        version: MaxBoxAcc version for box splits.
        cam_curve_interval: threshold step.

    Returns:
        :class:`~fcam.metrics.BoxResult` or :class:`~fcam.metrics.MaskResult`.
    """
    root = Path(scoremap_root)
    if not root.is_dir():
        raise FileNotFoundError(f"scoremap_root not found: {root}")
    meta_dir = Path(metadata)
    kind_probe = WSOLDataset(meta_dir, meta_dir, size=size)  # GT only: data_root unused
    if kind_probe.kind == "masks":
        if mask_root is None:
            raise ValueError("mask_root is required to evaluate a mask (OpenImages) split")
        gt = WSOLDataset(mask_root, kind_probe.metadata, mask_root=mask_root, size=size)
        evaluator: BoxEvaluator | MaskEvaluator = MaskEvaluator(cam_curve_interval)
    else:
        gt = kind_probe
        evaluator = BoxEvaluator(version=version, cam_curve_interval=cam_curve_interval)
    for image_id in gt.image_ids:
        path = _scoremap_path(root, image_id)
        scoremap = np.load(path, allow_pickle=False)
        if scoremap.shape != (size, size):
            raise ValueError(
                f"score map {path} has shape {scoremap.shape}, expected ({size}, {size})"
            )
        if isinstance(evaluator, MaskEvaluator):
            mask, ignore = gt.gt_mask(image_id)
            evaluator.update(scoremap[None], mask[None], ignore[None])
        else:
            evaluator.update(scoremap[None], [gt.gt_boxes(image_id).numpy()])
    return evaluator.compute()
