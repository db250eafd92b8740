"""Pseudo-label seeds sampled from CAMs, and the partial cross-entropy that fits them.

F-CAM trains its upscaler on a few foreground and background pixels drawn from the
classifier's CAM at every iteration (as in the published F-CAM code):

* foreground: the Otsu region of ``uint8(floor(255 * cam))`` (strictly above the threshold,
  which is clamped to [1, 254]), eroded by a ``fg_erode_k`` square with geodesic borders
  (the image border does not erode), where an erosion that would empty the region is undone;
  ``sl_max`` pixels are drawn uniformly without replacement from it;
* background: ``sl_min`` pixels drawn uniformly without replacement among the
  ``int(sl_min_p * H * W)`` pixels of lowest (float) CAM value;
* each drawn pixel is dilated to a ``sl_ksz`` square, pixels claimed by both sides are dropped,
  and a constant CAM yields no seed at all.

With ``bg_outside_roi=True`` (an fcam option) the background candidates also exclude the whole
Otsu region (before erosion). The published ``sl_min_p = 0.1`` never reaches into it, but a
larger share does whenever the CAM's region covers more than ``1 - sl_min_p`` of the image (an
object filling the frame): the same pixels are then candidates for both labels and the
background seeds land on the object.

With ``images`` and ``colour_bins > 0`` (an fcam option) the candidates must also agree with
the image's colours: two colour histograms (``colour_bins`` levels per RGB channel) are built
per image, one over the Otsu region and one over the background candidates, and a pixel stays a
foreground candidate only where its colour is more frequent in the Otsu region than among the
background candidates (and the reverse for the background). The Otsu region of a coarse CAM is a
blob larger than the object, so without this the foreground seeds also land on the background
around the object, and seeds and CRF then disagree on those pixels. An image whose filtered
candidates would be empty keeps the unfiltered ones. ``colour_mode="weight"`` (fcam's default)
keeps every candidate instead and draws each with a probability proportional to the ratio of
its colour's shares (region over background candidates for the foreground, the inverse for the
background), which does not flip when a background colour is only slightly more frequent in
the region than among the background candidates.

Everything runs batched on the CAM's device; the only randomness is a ``torch.rand`` call that
takes an optional :class:`torch.Generator`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcam.core.validation import check_bool, check_int, check_number
from fcam.losses._validation import check_float_tensor

__all__ = ["COLOUR_MODES", "SeedLoss", "otsu_threshold", "sample_seeds", "seed_loss"]

#: How :func:`sample_seeds` uses the colour histograms (``colour_bins > 0``).
COLOUR_MODES = ("filter", "weight")


def otsu_threshold(levels: Tensor) -> Tensor:
    """Batched Otsu threshold of integer grey levels in [0, 255].

    Same result as ``skimage.filters.threshold_otsu`` on each ``uint8`` image: the histogram
    runs over the image's own value range and, for every split ``v``, the between-class
    variance ``w_1(v) w_2(v+1) (mu_1(v) - mu_2(v+1))^2`` is maximised (first maximum wins).
    The precision mirrors scikit-image (float32 counts, float64 means) so ties break the same.

    Args:
        levels: integer tensor (B, N) with values in [0, 255].

    Returns:
        Long tensor (B,) of thresholds; a constant image returns its value.

    Example:
        >>> otsu_threshold(torch.tensor([[0, 0, 10, 200, 210, 220]]))
        tensor([10])
    """
    batch = levels.shape[0]
    counts = torch.zeros(batch, 256, dtype=torch.float32, device=levels.device)
    counts.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float32))
    centers = torch.arange(256, dtype=torch.float64, device=levels.device)
    moments = counts.double() * centers
    weight1 = counts.cumsum(1)
    weight2 = counts.flip(1).cumsum(1).flip(1)
    # Empty leading/trailing bins give 0/0 here; they are masked out below.
    mean1 = moments.cumsum(1) / weight1
    mean2 = moments.flip(1).cumsum(1).flip(1) / weight2
    variance = (weight1[:, :-1] * weight2[:, 1:]).double() * (mean1[:, :-1] - mean2[:, 1:]) ** 2
    lo, hi = levels.amin(1, keepdim=True), levels.amax(1, keepdim=True)
    split = torch.arange(255, device=levels.device)
    valid = (split >= lo) & (split < hi)
    variance = torch.where(valid, variance, torch.full_like(variance, -1.0))
    return torch.where(lo.squeeze(1) == hi.squeeze(1), lo.squeeze(1), variance.argmax(1))


def _square_pool(mask: Tensor, k: int) -> Tensor:
    """Binary dilation of (B, H, W) ``mask`` by a k x k square, pixels outside ignored."""
    if k == 1:
        return mask
    # Origin at k // 2 as kornia; zero padding = "outside pixels never set", i.e. a geodesic
    # border for dilation and, applied to the complement, for erosion too.
    before, after = k // 2, k - 1 - k // 2
    padded = F.pad(mask.unsqueeze(1).float(), (before, after, before, after), value=0.0)
    # Binary dilation = "the k x k box sum is positive"; the box is separable (k + k adds per
    # pixel instead of k²) and avg_pool2d is much cheaper than max_pool2d on CPU.
    rows = F.avg_pool2d(padded, (1, k), stride=1)
    return F.avg_pool2d(rows, (k, 1), stride=1).squeeze(1) > 0


def _erode(mask: Tensor, k: int, iterations: int) -> Tensor:
    """Erode each (H, W) region ``iterations`` times; an erosion that empties it is undone."""
    for _ in range(iterations):
        eroded = ~_square_pool(~mask, k)
        keep = eroded.flatten(1).any(1)
        if not bool(keep.any()):
            break
        mask = torch.where(keep[:, None, None], eroded, mask)
        # An image whose erosion emptied the region stops there, as in the reference
        # (further iterations would leave it unchanged anyway since `keep` stays False).
    return mask


def _draw(candidates: Tensor, n: int, generator: torch.Generator | None,
          weights: Tensor | None = None) -> Tensor:
    """Mark up to ``n`` pixels per row drawn without replacement from ``candidates``.

    Random keys + top-k: the ``n`` largest i.i.d. uniform keys among the candidates form a
    uniform sample without replacement; rows with fewer candidates take all of them. With
    positive ``weights`` the keys are ``log(u) / w`` (Efraimidis and Spirakis, 2006): a sample
    without replacement in which each draw picks a pixel with probability proportional to its
    weight among those left.
    """
    flat = candidates.flatten(1)
    n = min(n, flat.shape[1])
    if n == 0:
        return torch.zeros_like(candidates)
    keys = torch.rand(flat.shape, generator=generator, device=flat.device)
    # Non-candidates get a key below every candidate's: uniform keys lie in [0, 1), log-keys
    # in [log(1e-30) / w, 0).
    fill = -1.0
    if weights is not None:
        keys = keys.clamp_min(1e-30).log() / weights.flatten(1)
        fill = -math.inf
    top, index = torch.where(flat, keys, torch.full_like(keys, fill)).topk(n, dim=1)
    picked = torch.zeros_like(flat)
    picked.scatter_(1, index, top > fill)
    return picked.view_as(candidates)


def _colour_indices(images: Tensor, bins: int) -> Tensor:
    """(B, C, H, W) colours in [0, 255] -> (B, H*W) long index of each pixel's colour bin."""
    # 255 * bins / 256 < bins, so the levels stay below ``bins``.
    levels = (images.detach().flatten(2).clamp(0, 255) * (bins / 256.0)).long()
    index = levels[:, 0]
    for channel in range(1, levels.shape[1]):
        index = index * bins + levels[:, channel]
    return index


def _colour_ratio(colours: Tensor, n_bins: int, inside: Tensor, outside: Tensor) -> Tensor:
    """Per pixel: the share of its colour bin in ``inside`` over its share in ``outside``.

    ``colours`` (B, N) bin indices < ``n_bins``, ``inside``/``outside`` (B, N) bool.
    """
    counts = torch.zeros(2 * colours.shape[0], n_bins, dtype=torch.float32, device=colours.device)
    counts.scatter_add_(1, torch.cat((colours, colours)), torch.cat((inside, outside)).float())
    # One pseudo-count per bin: an empty region gives a flat histogram, not 0/0.
    shares = (counts + 1.0) / (counts.sum(1, keepdim=True) + n_bins)
    inside_share, outside_share = shares.chunk(2)
    return (inside_share / outside_share).gather(1, colours)


def check_colour_options(colour_bins: object, colour_mode: object) -> int:
    """Validate ``colour_bins`` (an int in [0, 64]) and ``colour_mode`` (:data:`COLOUR_MODES`).

    Returns:
        ``colour_bins`` as an int.

    Raises:
        ValueError: naming the argument that is out of range.
    """
    bins = check_int(colour_bins, "colour_bins", 0)
    if bins > 64:
        raise ValueError(f"colour_bins must be at most 64, got {bins}")
    if colour_mode not in COLOUR_MODES:
        raise ValueError(f"colour_mode must be one of {COLOUR_MODES}, got {colour_mode!r}")
    return bins


def _agreeing(candidates: Tensor, agree: Tensor) -> Tensor:
    """``candidates & agree``, except for images where that leaves no candidate."""
    kept = candidates & agree
    return torch.where(kept.flatten(1).any(1)[:, None, None], kept, candidates)


def sample_seeds(
    cams: Tensor,
    *,
    sl_max: int = 1,
    sl_min: int = 1,
    sl_ksz: int = 3,
    sl_min_p: float = 0.1,
    fg_erode_k: int = 11,
    fg_erode_iter: int = 1,
    ignore_index: int = -255,
    generator: torch.Generator | None = None,
    bg_outside_roi: bool = False,
    images: Tensor | None = None,
    colour_bins: int = 0,
    colour_mode: str = "filter",
) -> Tensor:
    """Sample foreground/background seed pixels from full-resolution CAMs.

    Args:
        cams: (B, H, W) or (B, 1, H, W) floating CAMs in [0, 1] (min-max normalised).
        sl_max: foreground pixels drawn per image (before dilation).
        sl_min: background pixels drawn per image (before dilation).
        sl_ksz: side of the square each drawn pixel is dilated to (1 = no dilation).
        sl_min_p: fraction of lowest-CAM pixels the background is drawn from.
        fg_erode_k: side of the square that erodes the Otsu foreground region.
        fg_erode_iter: number of erosions (each undone if it would empty the region).
        ignore_index: label of unseeded pixels.
        generator: optional generator on the CAMs' device, for reproducible draws.
        bg_outside_roi: draw background seeds only outside the Otsu region (before erosion),
            so that no pixel is a candidate for both labels.
        images: (B, 3, H, W) RGB (or (B, 1, H, W) grey) images in [0, 255] aligned with
            ``cams``; needed when ``colour_bins > 0``.
        colour_bins: levels per colour channel of the colour histograms the candidates are
            compared on (module docstring); 0: seeds from the CAM alone.
        colour_mode: ``"filter"`` keeps only the candidates whose colour agrees;
            ``"weight"`` keeps every candidate and draws each with a probability proportional
            to its colour's share ratio (region over background candidates for the
            foreground, the inverse for the background).

    Returns:
        Long tensor (B, H, W): 1 = foreground seed, 0 = background seed, ``ignore_index`` else.

    Example:
        >>> cams = torch.rand(2, 1, 32, 32)
        >>> seeds = sample_seeds(cams, generator=torch.Generator().manual_seed(0))
        >>> int((seeds == 1).sum()) <= 2 * 9
        True
    """
    cams = check_float_tensor(cams, "cams", (3, 4))
    if cams.ndim == 4:
        if cams.shape[1] != 1:
            raise ValueError(f"cams must be (B, H, W) or (B, 1, H, W), got {tuple(cams.shape)}")
        cams = cams[:, 0]
    if bool((cams < 0).any()) or bool((cams > 1).any()):
        raise ValueError("cams must be normalised to [0, 1] (see fcam.cams.normalize)")
    sl_max = check_int(sl_max, "sl_max", 0)
    sl_min = check_int(sl_min, "sl_min", 0)
    sl_ksz = check_int(sl_ksz, "sl_ksz")
    fg_erode_k = check_int(fg_erode_k, "fg_erode_k")
    fg_erode_iter = check_int(fg_erode_iter, "fg_erode_iter", 0)
    sl_min_p = check_number(sl_min_p, "sl_min_p", non_negative=True, maximum=1.0)
    check_bool(bg_outside_roi, "bg_outside_roi")
    colour_bins = check_colour_options(colour_bins, colour_mode)
    if colour_bins > 0:
        if images is None:
            raise ValueError("images are required when colour_bins > 0")
        images = check_float_tensor(images, "images", 4)
        if images.shape[0] != cams.shape[0] or images.shape[1] not in (1, 3) \
                or images.shape[2:] != cams.shape[1:]:
            raise ValueError(f"images must be (B, 3, H, W) or (B, 1, H, W) with B, H, W = "
                             f"{tuple(cams.shape)} matching cams, got {tuple(images.shape)}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) \
            or ignore_index in (0, 1):
        raise ValueError(f"ignore_index must be an int other than 0 and 1, got {ignore_index!r}")

    cams = cams.detach()
    batch, height, width = cams.shape
    flat = cams.reshape(batch, -1)
    levels = (flat * 255).floor().long()
    informative = levels.amin(1) != levels.amax(1)

    threshold = otsu_threshold(levels).clamp(1, 254)
    roi = (levels > threshold[:, None]).view(batch, height, width)
    region = _erode(roi, fg_erode_k, fg_erode_iter)

    n_low = int(sl_min_p * height * width)
    low = torch.zeros_like(flat, dtype=torch.bool)
    if n_low > 0:
        # The n_low smallest values (a linear-time selection, not a sort); ties at the cut
        # resolve by pixel order, as a stable ascending sort would.
        kth = flat.kthvalue(n_low, dim=1, keepdim=True).values
        below = flat < kth
        at_cut = flat == kth
        need = n_low - below.sum(1, keepdim=True)
        low = below | (at_cut & (at_cut.cumsum(1) <= need))
    low = low.view(batch, height, width)
    if bg_outside_roi:
        low = low & ~roi
    fg_weights = bg_weights = None
    if colour_bins > 0:
        assert images is not None
        colours = _colour_indices(images, colour_bins)
        n_bins = colour_bins ** images.shape[1]
        ratio = _colour_ratio(colours, n_bins, roi.flatten(1), low.flatten(1)).view_as(roi)
        if colour_mode == "filter":
            region, low = _agreeing(region, ratio > 1.0), _agreeing(low, ratio < 1.0)
        else:
            fg_weights, bg_weights = ratio, ratio.reciprocal()
    foreground = _square_pool(_draw(region, sl_max, generator, fg_weights), sl_ksz)
    background = _square_pool(_draw(low, sl_min, generator, bg_weights), sl_ksz)

    keep = informative[:, None, None]
    seeds = torch.full((batch, height, width), ignore_index, dtype=torch.long, device=cams.device)
    seeds[foreground & ~background & keep] = 1
    seeds[background & ~foreground & keep] = 0
    return seeds


def seed_loss(logits: Tensor, seeds: Tensor, ignore_index: int = -255) -> Tensor:
    """Partial cross-entropy over seeded pixels.

    .. math::
        \\mathcal{L} = -\\frac{1}{|\\Omega|} \\sum_{i \\in \\Omega}
            \\log \\mathrm{softmax}(z_i)_{y_i},
        \\qquad \\Omega = \\{i : y_i \\neq \\text{ignore\\_index}\\}

    the mean over all seeded pixels of the batch (as ``nn.CrossEntropyLoss(reduction="mean")``),
    except that a batch without any seed gives an exact, differentiable 0 instead of NaN.

    Args:
        logits: (B, K, H, W) floating logits.
        seeds: (B, H, W) integer labels in [0, K) or ``ignore_index``.
        ignore_index: label of unseeded pixels.

    Returns:
        Scalar loss.

    Example:
        >>> seeds = torch.full((1, 4, 4), -255); seeds[0, 0, 0] = 1
        >>> round(seed_loss(torch.zeros(1, 2, 4, 4), seeds).item(), 4)  # log 2
        0.6931
    """
    logits = check_float_tensor(logits, "logits", 4)
    if not isinstance(seeds, Tensor):
        raise TypeError(f"seeds must be a torch.Tensor, got {type(seeds).__name__}")
    if seeds.dtype != torch.long:
        raise TypeError(f"seeds must be a long tensor, got dtype {seeds.dtype}")
    if seeds.shape != (logits.shape[0], *logits.shape[2:]):
        expected = (logits.shape[0], *logits.shape[2:])
        raise ValueError(f"seeds must have shape (B, H, W) = {expected} matching logits, got "
                         f"{tuple(seeds.shape)}")
    seeded = seeds != ignore_index
    if bool(((seeds[seeded] < 0) | (seeds[seeded] >= logits.shape[1])).any()):
        raise ValueError(f"seeds must hold labels in [0, {logits.shape[1]}) or ignore_index")
    per_pixel = F.cross_entropy(logits, seeds, ignore_index=ignore_index, reduction="none")
    return per_pixel.sum() / seeded.sum().clamp(min=1)


class SeedLoss(nn.Module):
    """Module form of :func:`seed_loss`.

    Args:
        ignore_index: label of unseeded pixels.

    Example:
        >>> loss = SeedLoss()
        >>> loss(torch.randn(2, 2, 8, 8), torch.full((2, 8, 8), -255)).item()  # nothing seeded
        0.0
    """

    def __init__(self, ignore_index: int = -255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, seeds: Tensor) -> Tensor:
        return seed_loss(logits, seeds, self.ignore_index)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"
