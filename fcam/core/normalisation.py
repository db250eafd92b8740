"""Raw ``uint8`` RGB images to classifier inputs: one normalisation, for RGB and grey models.

The datasets and the command line keep the raw RGB image (for the CRF and the overlays) and
derive the classifier's input from it here. With one-channel statistics the input is the
image's luma, so a grey classifier reads what a grey copy of the file would give.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["LUMA_WEIGHTS", "normalise_raw"]

#: ITU-R BT.601 luma weights of R, G, B: PIL's ``convert("L")``, without its rounding.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def normalise_raw(raw: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(raw / 255 - mean) / std`` of a ``(..., 3, H, W)`` RGB tensor in [0, 255].

    With one value in ``mean`` and ``std`` the result has one channel, computed from the luma
    :math:`0.299 R + 0.587 G + 0.114 B` (a grey image, R = G = B, gives its own value).

    Example:
        >>> raw = torch.full((3, 1, 1), 255, dtype=torch.uint8)
        >>> normalise_raw(raw, (0.5,) * 3, (0.5,) * 3).flatten().tolist()
        [1.0, 1.0, 1.0]
        >>> round(normalise_raw(raw, (0.5,), (0.5,)).flatten().item(), 6)
        1.0

    Raises:
        ValueError: ``raw`` without three channels at dim -3, or statistics for neither one
            nor three channels.
    """
    if raw.ndim < 3 or raw.shape[-3] != 3:
        raise ValueError(f"raw must be (..., 3, H, W) RGB, got {tuple(raw.shape)}")
    if len(mean) not in (1, 3) or len(std) != len(mean):
        raise ValueError(
            f"mean and std need 1 (grey) or 3 (RGB) values, got {len(mean)} and {len(std)}"
        )
    values = raw.float() / 255
    if len(mean) == 1:
        luma = torch.tensor(LUMA_WEIGHTS, device=raw.device).view(3, 1, 1)
        values = (values * luma).sum(-3, keepdim=True)
    mean_t = torch.tensor(tuple(mean), device=raw.device).view(-1, 1, 1)
    std_t = torch.tensor(tuple(std), device=raw.device).view(-1, 1, 1)
    return (values - mean_t) / std_t
