r"""Input-level WSOL methods: Hide-and-Seek and CutMix, batched and seeded.

Both work on any device, on images of any (also non-square) size, never modify their input
and draw every random number from ``generator`` (the global torch generator when ``None``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from fcam.core.validation import check_images, check_int, check_number

__all__ = ["check_probability", "cutmix", "has"]


def check_probability(value: object, name: str) -> float:
    """Return ``value`` as a float after checking it lies in ``[0, 1]``.

    Example:
        >>> check_probability(0.5, "drop_rate")
        0.5
        >>> check_probability(1.5, "drop_rate")
        Traceback (most recent call last):
        ...
        ValueError: drop_rate must be <= 1.0, got 1.5

    Raises:
        ValueError: not a finite number in ``[0, 1]`` (the message names ``name``).
    """
    return check_number(value, name, non_negative=True, maximum=1.0)


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else generator.device


def has(
    images: Tensor,
    grid_size: int = 4,
    drop_rate: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Hide-and-Seek (Singh & Lee, ICCV 2017): zero random square patches of every image.

    The image is tiled by ``grid_size`` × ``grid_size``-pixel patches starting at the top-left
    corner (the last row and column of patches are cropped by the image border); patch
    :math:`(i, j)` of image :math:`b` is hidden independently with probability
    ``drop_rate``:

    .. math::
        \tilde x_b(y, x) = x_b(y, x)\,\big[u_{b,\lfloor y/g\rfloor,\lfloor x/g\rfloor}
        \ge p\big], \qquad u \sim \mathcal U[0, 1)

    As in wsolevaluation the hidden value is 0 (the dataset mean for normalised images); unlike
    its loop, rows and columns are not mixed up, so non-square images are tiled correctly.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> out = has(torch.ones(2, 3, 8, 12), grid_size=4, drop_rate=0.5, generator=g)
        >>> out.shape, sorted(out.unique().tolist())
        (torch.Size([2, 3, 8, 12]), [0.0, 1.0])

    Args:
        images: ``(B, C, H, W)`` float batch (left unchanged).
        grid_size: patch side in pixels; ``0`` disables hiding (a copy is returned).
        drop_rate: probability of hiding each patch, in ``[0, 1]``.
        generator: source of the patch draws (a CPU generator works for any device).

    Returns:
        A new tensor shaped like ``images``.

    Raises:
        TypeError, ValueError: bad ``images``, ``grid_size`` or ``drop_rate``.
    """
    check_images(images)
    grid = check_int(grid_size, "grid_size", minimum=0)
    rate = check_probability(drop_rate, "drop_rate")
    if grid == 0:
        return images.clone()
    batch, _, height, width = images.shape
    rows, cols = math.ceil(height / grid), math.ceil(width / grid)
    draws = torch.rand(batch, rows, cols, generator=generator, device=_generator_device(generator))
    keep = (draws >= rate).to(device=images.device, dtype=images.dtype)
    keep = keep.repeat_interleave(grid, dim=1).repeat_interleave(grid, dim=2)[:, :height, :width]
    return images * keep[:, None]


def _beta(beta: float, generator: torch.Generator | None) -> float:
    """One Beta(beta, beta) draw, seeded from ``generator`` (torch has no seeded Beta)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator,
                             device=_generator_device(generator)).item())
    return float(np.random.default_rng(seed).beta(beta, beta))


def _cutmix_box(
    height: int, width: int, lam: float, generator: torch.Generator | None
) -> tuple[int, int, int, int]:
    """CutMix's ``rand_bbox``: a box of sides ``H·sqrt(1-lam)``, ``W·sqrt(1-lam)`` around a
    uniform centre, clipped to the image; returns ``(y0, x0, y1, x1)`` (end-exclusive)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    centre = torch.rand(2, generator=generator, device=_generator_device(generator)).tolist()
    cy, cx = min(int(centre[0] * height), height - 1), min(int(centre[1] * width), width - 1)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, x0, y1, x1


def cutmix(
    images: Tensor,
    labels: Tensor,
    beta: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, float]:
    r"""CutMix (Yun et al., ICCV 2019): paste a random box of a shuffled batch into each image.

    With :math:`\lambda_0 \sim \mathrm{Beta}(\beta, \beta)`, a permutation :math:`\pi` of the
    batch and a box :math:`B` of sides :math:`\lfloor H\sqrt{1-\lambda_0}\rfloor`,
    :math:`\lfloor W\sqrt{1-\lambda_0}\rfloor` around a uniform centre, clipped to the image:

    .. math::
        \tilde x_b = \mathbb 1_{B}\odot x_{\pi(b)} + (1-\mathbb 1_{B})\odot x_b,\qquad
        \lambda = 1 - \frac{|B|}{HW}

    :math:`\lambda` is recomputed from the *clipped* box, so the loss
    :math:`\lambda\,\mathrm{CE}(f(\tilde x), y) + (1-\lambda)\,\mathrm{CE}(f(\tilde x), y_\pi)`
    weights each label by its visible area.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, ya, yb, lam = cutmix(torch.rand(4, 3, 8, 10), torch.arange(4), generator=g)
        >>> x.shape, ya.tolist(), 0.0 <= lam <= 1.0
        (torch.Size([4, 3, 8, 10]), [0, 1, 2, 3], True)

    Args:
        images: ``(B, C, H, W)`` float batch (left unchanged).
        labels: ``(B,)`` class indices.
        beta: parameter of the symmetric Beta distribution, ``> 0``.
        generator: source of every draw (a CPU generator works for any device).

    Returns:
        ``(mixed images, labels_a, labels_b, lam)``: ``labels_a`` are the original labels,
        ``labels_b`` those of the pasted images, ``lam`` the area share of ``labels_a``.

    Raises:
        TypeError, ValueError: bad ``images``, ``labels`` or ``beta``.
    """
    check_images(images)
    check_number(beta, "beta", positive=True)
    if not isinstance(labels, Tensor) or labels.shape != (images.shape[0],):
        raise ValueError(
            f"`labels` must be a ({images.shape[0]},) tensor, got "
            f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}"
        )
    batch, _, height, width = images.shape
    lam0 = _beta(float(beta), generator)
    perm = torch.randperm(batch, generator=generator, device=_generator_device(generator))
    perm = perm.to(images.device)
    y0, x0, y1, x1 = _cutmix_box(height, width, lam0, generator)
    mixed = images.clone()
    mixed[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return mixed, labels, labels[perm.to(labels.device)], lam
