r"""Gradient-based extractors: Grad-CAM, Grad-CAM++, Smooth-Grad-CAM++, XGrad-CAM, LayerCAM.

Notation: :math:`A_k` is channel :math:`k` of the target layer's output, :math:`y^c` the
raw logit of class :math:`c`, :math:`g_k = \partial y^c / \partial A_k` and
:math:`S_k = \sum_{a,b} A_k(a, b)`. Every map is :math:`\mathrm{ReLU}(\sum_k w_k A_k)`
at the layer's resolution. Gradients are taken with ``torch.autograd.grad`` w.r.t. the
captured activation only; no parameter gradient is ever computed.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fcam.cams.base import _CAM, _Forward, _generator
from fcam.core.validation import check_int

__all__ = ["GradCAM", "GradCAMpp", "LayerCAM", "SmoothGradCAMpp", "XGradCAM"]

_SPATIAL = (2, 3)


class _GradCAM(_CAM):
    """Base of the gradient family: weights are a function of ``(A, dy/dA)``."""

    _needs_grad: ClassVar[bool] = True

    def _weights(self, fwd: _Forward) -> Tensor:
        assert fwd.grads is not None  # _needs_grad guarantees a backward pass
        return self._grad_weights(fwd.activations, fwd.grads)

    @abstractmethod
    def _grad_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """Weights ``(B, C)`` or ``(B, C, h, w)`` from activations and their gradients."""


class GradCAM(_GradCAM):
    r"""Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391).

    .. math::
        w_k^c = \frac{1}{hw} \sum_{i,j} g_k(i, j), \qquad
        L^c = \mathrm{ReLU}\Big(\sum_k w_k^c A_k\Big)

    Example:
        >>> model = torchvision.models.resnet18(weights=None)     # doctest: +SKIP
        >>> with GradCAM(model, "layer4") as cam:                  # doctest: +SKIP
        ...     maps = cam(images, targets=[3, 7])                  # (2, h, w)

    Args:
        model: the classifier.
        target_layer: module, dotted name, or ``None`` to use the last spatial layer.
        output_fn: maps the model output to logits (for exotic outputs).
        reshape_transform: maps the layer output to ``(B, C, h, w)`` (e.g. ViT tokens).
    """

    def _grad_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        return grads.mean(dim=_SPATIAL)


class GradCAMpp(_GradCAM):
    r"""Grad-CAM++ (Chattopadhyay et al., WACV 2018, https://arxiv.org/abs/1710.11063).

    Closed form of eq. 19, valid under the exponential-output assumption (higher
    derivatives are replaced by powers of the first one), as in pytorch-grad-cam:

    .. math::
        \alpha_k(i, j) = \frac{g_k(i,j)^2}
            {2 g_k(i,j)^2 + \sum_{a,b} A_k(a,b)\, g_k(i,j)^3 + \epsilon}
        = \frac{g_k(i,j)^2}{2 g_k(i,j)^2 + S_k\, g_k(i,j)^3 + \epsilon},

    because :math:`g_k(i,j)^3` does not depend on :math:`(a, b)`: the denominator is the
    plain activation sum :math:`S_k` times the cube, **not** :math:`\sum_{a,b}(A_k g_k^3)`.
    Then :math:`w_k^c = \sum_{i,j} \alpha_k(i,j)\,\mathrm{ReLU}(g_k(i,j))` and
    :math:`L^c = \mathrm{ReLU}(\sum_k w_k^c A_k)`.

    Zero-denominator guard: :math:`\alpha` is set to 0 wherever :math:`g_k(i,j) = 0` or
    the denominator is exactly 0 (pytorch-grad-cam's convention, with the same default
    :math:`\epsilon = 10^{-6}`).

    Example:
        >>> with GradCAMpp(model, "layer4") as cam:   # doctest: +SKIP
        ...     maps = cam(images)

    Args:
        model: the classifier.
        target_layer: module, dotted name, or ``None`` to use the last spatial layer.
        eps: added to the denominator of :math:`\alpha`.
        **kwargs: ``output_fn`` and ``reshape_transform``, as in :class:`GradCAM`.
    """

    def __init__(
        self, model: nn.Module, target_layer: nn.Module | str | None = None, *, eps: float = 1e-6, **kwargs: Any
    ) -> None:
        super().__init__(model, target_layer, **kwargs)
        self.eps = float(eps)

    def _grad_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        squared = grads * grads
        return _plusplus_weights(activations, grads, squared, squared * grads, self.eps)


class SmoothGradCAMpp(GradCAMpp):
    r"""Smooth Grad-CAM++ (Omeiza et al., 2019, https://arxiv.org/abs/1908.01224).

    Grad-CAM++ with gradient moments averaged over ``num_samples`` noisy copies
    :math:`x_n = x + \delta_n`, :math:`\delta_n \sim \mathcal N(0, \sigma^2)`:

    .. math::
        \bar g^{(p)}_k = \frac{1}{N} \sum_n \big(g_k^{(n)}\big)^p, \qquad
        \alpha_k = \frac{\bar g^{(2)}_k}{2 \bar g^{(2)}_k + S_k \bar g^{(3)}_k + \epsilon},
        \qquad w_k^c = \sum_{i,j} \alpha_k\, \mathrm{ReLU}(\bar g^{(1)}_k)

    where :math:`S_k` and the final :math:`L^c = \mathrm{ReLU}(\sum_k w_k^c A_k)` use the
    activations of the **clean** input; targets (argmax when not given) also come from it.
    Noise is drawn from ``torch.Generator().manual_seed(seed)`` when ``seed`` is set, so
    calls are reproducible. (torchcam differs: it uses :math:`\sum_{ab} A\bar g^{(3)}`,
    the last pass' gradient and the last noisy activations.)

    Example:
        >>> cam = SmoothGradCAMpp(model, "layer4", num_samples=8, std=0.2, seed=0)  # doctest: +SKIP

    Args:
        model: the classifier.
        target_layer: module, dotted name, or ``None``.
        num_samples: number of noisy copies :math:`N`.
        std: noise standard deviation :math:`\sigma` (in the units of the model input).
        seed: seed of the noise generator; ``None`` uses torch's global RNG.
        **kwargs: ``eps`` (as in :class:`GradCAMpp`), ``output_fn``, ``reshape_transform``.
    """

    _needs_grad: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        num_samples: int = 4,
        std: float = 0.3,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, **kwargs)
        if not std >= 0:
            raise ValueError(f"`std` must be >= 0, got {std!r}")
        self.num_samples = check_int(num_samples, "`num_samples`")
        self.std = float(std)
        self.seed = seed

    def _weights(self, fwd: _Forward) -> Tensor:
        generator = _generator(self.seed, fwd.images.device)
        moments = [torch.zeros_like(fwd.activations) for _ in range(3)]
        for _ in range(self.num_samples):
            noise = torch.randn(
                fwd.images.shape, generator=generator, device=fwd.images.device, dtype=fwd.images.dtype
            )
            noisy = self._forward(fwd.images + self.std * noise, fwd.targets, grad=True)
            assert noisy.grads is not None
            grads = noisy.grads
            moments[0] += grads
            moments[1] += grads * grads
            moments[2] += grads * grads * grads
        mean1, mean2, mean3 = (m / self.num_samples for m in moments)
        return _plusplus_weights(fwd.activations, mean1, mean2, mean3, self.eps)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(target_layer={self.target_name!r}, num_samples={self.num_samples}, "
            f"std={self.std}, seed={self.seed})"
        )


class XGradCAM(_GradCAM):
    r"""XGrad-CAM (Fu et al., BMVC 2020, https://arxiv.org/abs/2008.02312).

    .. math::
        w_k^c = \sum_{i,j} \frac{A_k(i,j)}{S_k + \epsilon}\, g_k(i,j), \qquad
        L^c = \mathrm{ReLU}\Big(\sum_k w_k^c A_k\Big)

    with :math:`\epsilon = 10^{-7}` (pytorch-grad-cam's value).

    Example:
        >>> with XGradCAM(model, "layer4") as cam:   # doctest: +SKIP
        ...     maps = cam(images)

    Args:
        model: the classifier.
        target_layer: module, dotted name, or ``None``.
        eps: added to :math:`S_k`.
        **kwargs: ``output_fn`` and ``reshape_transform``, as in :class:`GradCAM`.
    """

    def __init__(
        self, model: nn.Module, target_layer: nn.Module | str | None = None, *, eps: float = 1e-7, **kwargs: Any
    ) -> None:
        super().__init__(model, target_layer, **kwargs)
        self.eps = float(eps)

    def _grad_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        total = activations.sum(dim=_SPATIAL)
        return (grads * activations).sum(dim=_SPATIAL) / (total + self.eps)


class LayerCAM(_GradCAM):
    r"""LayerCAM (Jiang et al., TIP 2021, https://ieeexplore.ieee.org/document/9462463).

    Element-wise weights instead of one weight per channel:

    .. math::
        L^c(i, j) = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}(g_k(i,j))\, A_k(i,j)\Big)

    Example:
        >>> with LayerCAM(model, "layer3") as cam:   # doctest: +SKIP
        ...     maps = cam(images)

    Args:
        model: the classifier.
        target_layer: module, dotted name, or ``None``.
        output_fn: maps the model output to logits.
        reshape_transform: maps the layer output to ``(B, C, h, w)``.
    """

    def _grad_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        return torch.relu(grads)


def _plusplus_weights(
    activations: Tensor, grads: Tensor, squared: Tensor, cubed: Tensor, eps: float
) -> Tensor:
    """Grad-CAM++ channel weights from the first three gradient moments (see GradCAMpp)."""
    total = activations.sum(dim=_SPATIAL, keepdim=True)
    denom = 2 * squared + total * cubed + eps
    valid = (squared != 0) & (denom != 0)
    alpha = torch.where(valid, squared / torch.where(valid, denom, torch.ones_like(denom)), 0.0)
    return (alpha * torch.relu(grads)).sum(dim=_SPATIAL)

