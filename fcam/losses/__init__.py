"""F-CAM losses: seed sampling and partial cross-entropy, dense-CRF loss, log-barrier size loss.

>>> from fcam.losses import FCAMLoss, sample_seeds
>>> loss = FCAMLoss()
"""

from __future__ import annotations

from fcam.losses.bilateral import (
    exact_gaussian_filter,
    grid_gaussian_filter,
    lowrank_gaussian_filter,
    spatial_basis,
)
from fcam.losses.crf import DEFAULT_CRF_WEIGHT, DenseCRFLoss, dense_crf_loss
from fcam.losses.fcam_loss import FCAMLoss
from fcam.losses.seeds import SeedLoss, otsu_threshold, sample_seeds, seed_loss
from fcam.losses.size import BarrierSchedule, LogBarrier, SizeLoss, log_barrier, size_loss

__all__ = [
    "DEFAULT_CRF_WEIGHT",
    "BarrierSchedule",
    "DenseCRFLoss",
    "FCAMLoss",
    "LogBarrier",
    "SeedLoss",
    "SizeLoss",
    "dense_crf_loss",
    "exact_gaussian_filter",
    "grid_gaussian_filter",
    "log_barrier",
    "lowrank_gaussian_filter",
    "otsu_threshold",
    "sample_seeds",
    "seed_loss",
    "size_loss",
    "spatial_basis",
]
