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
    "sample_seeds",
    "otsu_threshold",
    "seed_loss",
    "SeedLoss",
    "dense_crf_loss",
    "DenseCRFLoss",
    "DEFAULT_CRF_WEIGHT",
    "exact_gaussian_filter",
    "grid_gaussian_filter",
    "lowrank_gaussian_filter",
    "spatial_basis",
    "log_barrier",
    "LogBarrier",
    "BarrierSchedule",
    "size_loss",
    "SizeLoss",
    "FCAMLoss",
]
