r"""Activation-based extractors: CAM and the Score-CAM family (Score-CAM, SS-CAM, IS-CAM).

None of them needs gradients; the Score-CAM family scores masked copies of the input
in batches of ``batch_size`` forward passes under ``torch.no_grad()``.

Mask recipe of the Score-CAM family (torchcam's, chosen so that the masks are built with
the same :func:`fcam.cams.normalize` / :func:`fcam.cams.upsample` conventions as the rest
of fcam): each activation channel is min-max normalised **at the layer resolution**
(:math:`\epsilon = 10^{-8}`), then upsampled to the input size with bilinear
interpolation, ``align_corners=False``. pytorch-grad-cam instead upsamples first with
``align_corners=True`` and normalises at full resolution; override
:meth:`_ScoreCAM._masks` to use another recipe. Scores are raw logits; the baseline score
of the unmasked input is not subtracted because the softmax over channels is
shift-invariant.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fcam.cams.base import _CAM, _Forward, _generator
from fcam.cams.maps import normalize, upsample
from fcam.core.layers import resolve_layer
from fcam.core.validation import check_int

__all__ = ["CAM", "ISCAM", "SSCAM", "ScoreCAM"]


class CAM(_CAM):
    r"""Class activation mapping (Zhou et al., CVPR 2016, https://arxiv.org/abs/1512.04150).

    For a classifier ending in global average pooling followed by one linear layer
    :math:`y^c = \sum_k W_{ck} \frac{1}{hw}\sum_{ij} A_k(i,j) + b_c`:

    .. math::
        L^c = \mathrm{ReLU}\Big(\sum_k W_{ck} A_k\Big)

    (the bias is dropped; the ReLU keeps maps non-negative like every other extractor).
    The linear layer is the last ``nn.Linear`` of the model unless ``fc_layer`` is given.
    A ``ValueError`` is raised when the model has no linear layer or when its input size
    does not match the number of channels of the target layer (no GAP + linear head, e.g.
    VGG or MobileNetV3 classifiers).

    Example:
        >>> with CAM(torchvision.models.resnet18(), "layer4") as cam:   # doctest: +SKIP
        ...     maps = cam(images)

    Args:
        model: the classifier.
        target_layer: module, dotted name, or ``None`` (last spatial layer).
        fc_layer: the linear classifier (module or dotted name); found automatically if ``None``.
        **kwargs: ``output_fn`` and ``reshape_transform``, as in :class:`fcam.cams.GradCAM`.

    Raises:
        ValueError: if no linear layer can be found.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        fc_layer: nn.Module | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, **kwargs)
        if fc_layer is None:
            linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
            if not linears:
                raise ValueError(
                    "CAM needs a global-average-pool + linear head, but the model has no nn.Linear; "
                    "pass `fc_layer` or use a gradient method"
                )
            fc_layer = linears[-1]
        self.fc_name, fc = resolve_layer(model, fc_layer)
        if not isinstance(fc, nn.Linear):
            raise ValueError(f"`fc_layer` {self.fc_name!r} is a {type(fc).__name__}, not an nn.Linear")
        self.fc_layer = fc

    def _weights(self, fwd: _Forward) -> Tensor:
        weight = self.fc_layer.weight
        channels = fwd.activations.shape[1]
        if weight.shape[1] != channels:
            raise ValueError(
                f"CAM needs a global-average-pool + linear head: `fc_layer` {self.fc_name!r} takes "
                f"{weight.shape[1]} features but `target_layer` {self.target_name!r} has {channels} "
                "channels; use a gradient method for this model"
            )
        return weight.detach()[fwd.targets].to(fwd.activations.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_layer={self.target_name!r}, fc_layer={self.fc_name!r})"


class _ScoreCAM(_CAM):
    r"""Base of the Score-CAM family.

    With masks :math:`M_k` (see the module docstring), every method computes
    :math:`w^c = \mathrm{softmax}_k\big(\frac{1}{N}\sum_{n=1}^{N} y^c(x \odot P_n(M_k))\big)`
    for its own perturbations :math:`P_n` (:meth:`_perturb`), then
    :math:`L^c = \mathrm{ReLU}(\sum_k w_k^c A_k)`. The ``B * C`` masked inputs of every
    sample are forwarded in chunks of ``batch_size``; spatially constant channels (all-zero
    masks) are scored once when the perturbation keeps them at zero.
    """

    _num_samples: int = 1
    _zero_masks_stay_zero: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, **kwargs)
        self.batch_size = check_int(batch_size, "`batch_size`")

    def _masks(self, activations: Tensor, size: tuple[int, int]) -> Tensor:
        """Masks ``(n, 1, H, W)`` in [0, 1] from ``(n, 1, h, w)`` activation channels."""
        return upsample(normalize(activations), size)

    @abstractmethod
    def _perturb(self, masks: Tensor, sample: int, generator: torch.Generator | None) -> Tensor:
        """Perturbation :math:`P_n` applied to a chunk of masks for sample ``n``."""

    def _weights(self, fwd: _Forward) -> Tensor:
        images, activations = fwd.images, fwd.activations
        batch, channels = activations.shape[:2]
        flat = activations.reshape(batch * channels, 1, *activations.shape[2:])
        owner = torch.arange(batch, device=images.device).repeat_interleave(channels)
        generator = _generator(getattr(self, "seed", None), images.device)
        size = (images.shape[-2], images.shape[-1])
        totals = images.new_zeros(batch * channels)
        with torch.no_grad():
            live = self._score_blank_channels(fwd, flat, owner, size, totals)
            for sample in range(self._num_samples):
                for start in range(0, live.numel(), self.batch_size):
                    chunk = live[start : start + self.batch_size]
                    masks = self._perturb(self._masks(flat[chunk], size), sample, generator)
                    rows = owner[chunk]
                    logits = self._logits(images[rows] * masks.to(images.dtype))
                    totals[chunk] += logits.gather(1, fwd.targets[rows, None]).squeeze(1).to(totals.dtype)
        mean = (totals / self._num_samples).reshape(batch, channels)
        return torch.softmax(mean, dim=1).to(activations.dtype)

    def _score_blank_channels(
        self, fwd: _Forward, flat: Tensor, owner: Tensor, size: tuple[int, int], totals: Tensor
    ) -> Tensor:
        """Score spatially constant channels with one forward pass; return the other indices.

        A constant channel gives an all-zero mask, hence the same all-zero masked input,
        whatever the channel. When the perturbation keeps zero masks at zero (Score-CAM,
        IS-CAM), that input is scored once instead of once per channel and sample (an
        exact shortcut: post-ReLU layers often have dead channels).
        """
        everything = torch.arange(flat.shape[0], device=flat.device)
        if not self._zero_masks_stay_zero:
            return everything
        constant = (flat.amax(dim=(1, 2, 3)) == flat.amin(dim=(1, 2, 3)))
        if not bool(constant.any()) or bool(self._masks(flat[constant][:1], size).any()):
            return everything
        blank = self._logits(torch.zeros_like(fwd.images[:1]))[0]
        totals[constant] = self._num_samples * blank[fwd.targets[owner[constant]]].to(totals.dtype)
        return everything[~constant]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_layer={self.target_name!r}, batch_size={self.batch_size})"


class ScoreCAM(_ScoreCAM):
    r"""Score-CAM (Wang et al., CVPR-W 2020, https://arxiv.org/abs/1910.01279).

    .. math::
        w_k^c = \mathrm{softmax}_k\big(y^c(x \odot M_k)\big), \qquad
        L^c = \mathrm{ReLU}\Big(\sum_k w_k^c A_k\Big)

    with :math:`M_k` the normalised, upsampled channel :math:`k` (module docstring).

    Example:
        >>> with ScoreCAM(model, "layer4", batch_size=64) as cam:   # doctest: +SKIP
        ...     maps = cam(images)

    Args:
        model: the classifier.
        target_layer: module, dotted name, or ``None``.
        batch_size: masked inputs per forward pass.
        output_fn: maps the model output to logits.
        reshape_transform: maps the layer output to ``(B, C, h, w)``.
    """

    def _perturb(self, masks: Tensor, sample: int, generator: torch.Generator | None) -> Tensor:
        return masks


class SSCAM(_ScoreCAM):
    r"""SS-CAM, smoothed Score-CAM (Wang et al., 2020, https://arxiv.org/abs/2006.14255).

    .. math::
        w_k^c = \mathrm{softmax}_k\Big(\frac{1}{N}\sum_{n=1}^{N} y^c\big(x \odot (M_k + \delta_{n,k})\big)\Big),
        \qquad \delta_{n,k} \sim \mathcal N(0, \sigma^2)

    with noise drawn at input resolution, sample by sample and chunk by chunk, from
    ``torch.Generator().manual_seed(seed)`` (global RNG when ``seed`` is ``None``).
    Defaults follow torchcam (``num_samples=35``, ``std=2.0``).

    Example:
        >>> cam = SSCAM(model, "layer4", num_samples=8, std=1.0, seed=0)   # doctest: +SKIP

    Args:
        model: the classifier.
        target_layer: module, dotted name, or ``None``.
        num_samples: number of noisy mask sets :math:`N`.
        std: noise standard deviation :math:`\sigma`.
        seed: noise seed.
        **kwargs: ``batch_size``, ``output_fn``, ``reshape_transform`` (see :class:`ScoreCAM`).
    """

    # additive noise makes every mask distinct, constant channels included
    _zero_masks_stay_zero: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        num_samples: int = 35,
        std: float = 2.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, **kwargs)
        self._num_samples = check_int(num_samples, "`num_samples`")
        if not std >= 0:
            raise ValueError(f"`std` must be >= 0, got {std!r}")
        self.std = float(std)
        self.seed = seed

    def _perturb(self, masks: Tensor, sample: int, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(masks.shape, generator=generator, device=masks.device, dtype=masks.dtype)
        return masks + self.std * noise


class ISCAM(_ScoreCAM):
    r"""IS-CAM, integrated Score-CAM (Naidu et al., 2020, https://arxiv.org/abs/2010.03023).

    The masks are scaled by cumulative coefficients :math:`c_n = \sum_{j=1}^{n} j/N`
    (the paper's and torchcam's recipe) and the scores averaged:

    .. math::
        w_k^c = \mathrm{softmax}_k\Big(\frac{1}{N}\sum_{n=1}^{N} y^c(x \odot c_n M_k)\Big)

    Example:
        >>> cam = ISCAM(model, "layer4", num_samples=10)   # doctest: +SKIP

    Args:
        model: the classifier.
        target_layer: module, dotted name, or ``None``.
        num_samples: number of integration steps :math:`N`.
        **kwargs: ``batch_size``, ``output_fn``, ``reshape_transform`` (see :class:`ScoreCAM`).
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        num_samples: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, **kwargs)
        self._num_samples = check_int(num_samples, "`num_samples`")

    def _perturb(self, masks: Tensor, sample: int, generator: torch.Generator | None) -> Tensor:
        steps = sample + 1
        coefficient = steps * (steps + 1) / (2 * self._num_samples)
        return coefficient * masks

