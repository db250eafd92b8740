r"""Attention-based Dropout Layer (Choe & Shim, CVPR 2019), as in wsolevaluation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fcam.wsol.augment import check_probability

__all__ = ["ADL"]


class ADL(nn.Module):
    r"""Attention-based Dropout Layer: the identity in eval mode.

    In training, with the channel-mean self-attention :math:`a = \frac1C\sum_k x_k` of each
    image, one draw per forward picks either the *drop mask* (probability ``drop_rate``) or
    the *importance map*:

    .. math::
        M_{drop} = \big[a < \tau\,\max_{h,w} a\big], \qquad M_{imp} = \sigma(a), \qquad
        \mathrm{ADL}(x) = x \odot M

    (:math:`\tau` = ``drop_threshold``, the max per image). The batch shares the draw, as in
    the reference code; only the chosen map is computed.

    Example:
        >>> layer = ADL(drop_rate=1.0, drop_threshold=0.5)
        >>> x = torch.tensor([[[[1.0, 4.0]]]])
        >>> layer(x)                      # drop mask: 4 >= 0.5 * 4 is dropped
        tensor([[[[1., 0.]]]])
        >>> layer.eval()(x) is x
        True

    Args:
        drop_rate: probability of applying the drop mask, in ``[0, 1]`` (0.75 in wsolevaluation).
        drop_threshold: fraction of the maximum attention above which the drop mask hides,
            in ``[0, 1]`` (0.9 in wsolevaluation's configuration).

    Attributes:
        generator: optional ``torch.Generator`` (CPU) for the per-forward draw;
            :func:`fcam.wsol.train` sets it for seeded runs.

    Raises:
        ValueError: ``drop_rate`` or ``drop_threshold`` outside ``[0, 1]``.
    """

    def __init__(self, drop_rate: float = 0.75, drop_threshold: float = 0.9) -> None:
        super().__init__()
        self.drop_rate = check_probability(drop_rate, "drop_rate")
        self.drop_threshold = check_probability(drop_threshold, "drop_threshold")
        self.generator: torch.Generator | None = None

    def drop_mask(self, attention: Tensor) -> Tensor:
        """``[a < drop_threshold · max a]`` per image, as a float map."""
        peak = attention.flatten(1).amax(dim=1).view(-1, *([1] * (attention.ndim - 1)))
        return (attention < peak * self.drop_threshold).to(attention.dtype)

    @staticmethod
    def importance_map(attention: Tensor) -> Tensor:
        """``sigmoid(a)``."""
        return torch.sigmoid(attention)

    def forward(self, x: Tensor) -> Tensor:
        """Apply ADL to ``(B, C, h, w)`` features (identity in eval mode)."""
        if not self.training:
            return x
        if x.ndim != 4:
            raise ValueError(f"ADL input must be 4-D (B, C, h, w), got shape {tuple(x.shape)}")
        attention = x.mean(dim=1, keepdim=True)
        draw = float(torch.rand((), generator=self.generator))
        use_drop = draw + self.drop_rate >= 1.0  # floor(u + rate) == 1, as in the reference
        selected = self.drop_mask(attention) if use_drop else self.importance_map(attention)
        return x * selected

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, drop_threshold={self.drop_threshold}"

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["generator"] = None  # generators do not pickle; a copy draws from the global RNG
        return state
