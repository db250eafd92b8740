"""Extended log-barrier (Kervadec et al., 2019) and the F-CAM absolute-size constraint.

F-CAM keeps both the foreground and the background from vanishing by imposing
``-size_k <= 0`` on the absolute pixel mass ``size_k = sum_i S_ik`` of each class through the
extended log-barrier, whose sharpness ``t`` grows once per epoch (Kervadec et al., 2019).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fcam.core.validation import check_number
from fcam.losses._validation import check_float_tensor, check_probs

__all__ = ["BarrierSchedule", "LogBarrier", "SizeLoss", "log_barrier", "size_loss"]


def log_barrier(z: Tensor, t: float | Tensor) -> Tensor:
    """Extended log-barrier for the constraint ``z <= 0``, element-wise.

    .. math::
        \\psi_t(z) = \\begin{cases}
            -\\frac{1}{t}\\log(-z) & z \\le -\\frac{1}{t^2} \\\\
            t z - \\frac{1}{t}\\log\\frac{1}{t^2} + \\frac{1}{t} & \\text{otherwise}
        \\end{cases}

    It is continuous with a continuous first derivative at ``z = -1/t^2`` and linear (so finite
    and defined) for feasible-violating ``z > -1/t^2``.

    Args:
        z: floating tensor of constraint values.
        t: barrier sharpness (> 0), a float or a scalar tensor.

    Returns:
        Tensor like ``z``.

    Example:
        >>> import math
        >>> log_barrier(torch.tensor([-math.e, 0.0]), 1.0).round(decimals=4).tolist()
        [-1.0, 1.0]
    """
    z = check_float_tensor(z, "z", tuple(range(9)))
    if isinstance(t, Tensor):
        if t.numel() != 1 or not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
            raise ValueError("t must be a positive finite scalar")
        t = t.to(z)
    else:
        t = check_number(t, "t", positive=True)
    edge = -1.0 / t**2
    inside = z <= edge
    # Clamp the log argument so the unused branch of torch.where has no inf/NaN gradient.
    barrier = -torch.log(torch.clamp(-z, min=1.0 / t**2)) / t
    log_edge = torch.log(torch.as_tensor(1.0 / t**2, dtype=z.dtype, device=z.device))
    linear = t * z - log_edge / t + 1.0 / t
    return torch.where(inside, barrier, linear)


class BarrierSchedule:
    """Geometric schedule of the barrier sharpness: ``t <- min(t * mulcoef, max_t)`` per step.

    Step it once per epoch. ``state_dict``/``load_state_dict`` carry ``t`` for checkpoints.

    Args:
        init_t: initial ``t`` (> 0).
        max_t: ceiling of ``t`` (>= ``init_t``).
        mulcoef: factor applied at each step (>= 1).

    Example:
        >>> s = BarrierSchedule(init_t=1.0, max_t=10.0, mulcoef=1.01)
        >>> round(s.step(), 4)
        1.01
    """

    def __init__(self, init_t: float = 1.0, max_t: float = 10.0, mulcoef: float = 1.01) -> None:
        init_t = check_number(init_t, "init_t", positive=True)
        max_t = check_number(max_t, "max_t")
        mulcoef = check_number(mulcoef, "mulcoef")
        if max_t < init_t:
            raise ValueError(f"max_t must be >= init_t, got max_t={max_t}, init_t={init_t}")
        if mulcoef < 1:
            raise ValueError(f"mulcoef must be >= 1, got {mulcoef}")
        self.init_t = float(init_t)
        self.max_t = float(max_t)
        self.mulcoef = float(mulcoef)
        self.t = float(init_t)

    def step(self) -> float:
        """Advance one epoch and return the new ``t``."""
        self.t = min(self.t * self.mulcoef, self.max_t)
        return self.t

    def state_dict(self) -> dict[str, float]:
        return {"t": self.t, "init_t": self.init_t, "max_t": self.max_t, "mulcoef": self.mulcoef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "t" not in state:
            raise ValueError("state must contain 't'")
        for key in ("init_t", "max_t", "mulcoef"):
            if key in state:
                setattr(self, key, float(state[key]))
        self.t = float(state["t"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(t={self.t:.6g}, init_t={self.init_t}, max_t={self.max_t}, "
                f"mulcoef={self.mulcoef})")


class LogBarrier(nn.Module):
    """Module form of :func:`log_barrier` with its own :class:`BarrierSchedule`.

    ``t`` is stored in the module's ``state_dict`` (as extra state), so it survives
    ``torch.save(module.state_dict())`` / ``load_state_dict`` with ``weights_only=True``.

    Example:
        >>> barrier = LogBarrier()
        >>> barrier(torch.tensor([-1.0])).abs().tolist()  # -log(1) / t
        [0.0]
    """

    def __init__(self, init_t: float = 1.0, max_t: float = 10.0, mulcoef: float = 1.01) -> None:
        super().__init__()
        self.schedule = BarrierSchedule(init_t, max_t, mulcoef)

    @property
    def t(self) -> float:
        return self.schedule.t

    def step(self) -> float:
        """Advance the schedule by one epoch and return the new ``t``."""
        return self.schedule.step()

    def forward(self, z: Tensor) -> Tensor:
        return log_barrier(z, self.schedule.t)

    def get_extra_state(self) -> dict[str, float]:
        return self.schedule.state_dict()

    def set_extra_state(self, state: Any) -> None:
        self.schedule.load_state_dict(state)

    def extra_repr(self) -> str:
        return repr(self.schedule)


def size_loss(probs: Tensor, t: float | Tensor, weight: float = 0.1,
              min_share: float | None = None) -> Tensor:
    """Absolute-size constraint: both classes must keep a positive pixel mass.

    .. math::
        \\mathcal{L} = \\lambda \\frac{1}{K} \\sum_{k} \\frac{1}{B} \\sum_{b}
        \\psi_t\\Big(-\\sum_{i} S_{bki}\\Big)

    With K = 2 (background, foreground) this is the published F-CAM
    ``λ · ½ [mean_b ψ_t(−size_bg) + mean_b ψ_t(−size_fg)]``; sizes are absolute sums, not
    fractions.

    With ``min_share=m`` the constraint becomes "each class covers at least a share ``m`` of
    the image", enforced by a penalty that is **zero** while it holds (``t`` is then unused):

    .. math::
        \\mathcal{L} = \\lambda \\frac{1}{K} \\sum_{k} \\frac{1}{B} \\sum_{b}
        \\Big(\\frac{\\max(0,\\, m - \\bar S_{bk})}{m}\\Big)^2,
        \\qquad \\bar S_{bk} = \\frac{1}{HW}\\sum_i S_{bki}.

    The log-barrier's gradient ``-λ/(2Bt · size_k)`` per pixel never vanishes: it pushes every
    pixel towards the smaller class, i.e. towards a 50/50 split, with a total force comparable
    to the seeds' once the seeds are fitted. The penalty form only acts near a collapse (see
    docs/concepts/fcam.md).

    Args:
        probs: (B, K, H, W) probabilities (softmax over K), K >= 2.
        t: barrier sharpness.
        weight: λ.
        min_share: ``None`` (published barrier on absolute sizes) or the minimal share in
            (0, 0.5] of each class (zero-inside penalty).

    Returns:
        Scalar loss.

    Example:
        >>> probs = torch.full((1, 2, 4, 4), 0.5)
        >>> round(size_loss(probs, 1.0, weight=1.0).item(), 4)  # -log(8)
        -2.0794
        >>> size_loss(probs, 1.0, weight=1.0, min_share=0.05).item()  # both shares >= 5 %
        0.0
    """
    probs = check_probs(probs)
    min_share = _check_min_share(min_share)
    if min_share is not None:
        shares = probs.mean(dim=(2, 3))
        return weight * (torch.relu(min_share - shares) / min_share).square().mean(dim=0).mean()
    sizes = probs.sum(dim=(2, 3))
    return weight * log_barrier(-sizes, t).mean(dim=0).mean()


def _check_min_share(min_share: float | None) -> float | None:
    if min_share is None:
        return None
    return check_number(min_share, "min_share", positive=True, maximum=0.5)


class SizeLoss(nn.Module):
    """Module form of :func:`size_loss` holding the barrier schedule.

    Call :meth:`step` once per epoch. ``t`` is saved in ``state_dict()``.

    Args:
        weight: λ (published run: 0.1).
        init_t: initial barrier sharpness.
        max_t: ceiling of ``t``.
        mulcoef: per-epoch factor of ``t``.
        min_share: ``None`` (published log-barrier on absolute sizes) or the minimal share of
            each class, enforced by a penalty that is zero while it holds (:func:`size_loss`).

    Example:
        >>> loss = SizeLoss()
        >>> value = loss(torch.softmax(torch.randn(2, 2, 8, 8), dim=1))
        >>> round(loss.step(), 2)
        1.01
    """

    def __init__(self, weight: float = 0.1, init_t: float = 1.0, max_t: float = 10.0,
                 mulcoef: float = 1.01, min_share: float | None = None) -> None:
        super().__init__()
        self.weight = check_number(weight, "weight")
        self.barrier = LogBarrier(init_t, max_t, mulcoef)
        self.min_share = _check_min_share(min_share)

    @property
    def t(self) -> float:
        return self.barrier.t

    def step(self) -> float:
        """Advance the barrier schedule by one epoch and return the new ``t``."""
        return self.barrier.step()

    def forward(self, probs: Tensor) -> Tensor:
        return size_loss(probs, self.barrier.t, self.weight, self.min_share)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, min_share={self.min_share}"
