"""A segmentation head with a per-class residual: the decoder's map for one explained class.

F-CAM's decoder is class-agnostic: its 2-channel head marks whatever looks like an object. In
images that hold objects of several classes (a second animal, the look-alike distractors of
the robustness benchmark) every object then becomes foreground, whichever class is explained,
while the seeds it learns from come from the CAM of *one* class. :class:`ClassConditionalHead`
keeps the shared head and adds, for the class :math:`c` being explained, a residual
convolution of its own:

.. math::
    z_c(x) = W_{shared} * x + b_{shared} + W_c * x + b_c,

where :math:`x` is the decoder's last feature map and :math:`W_c, b_c` have the shared head's
shape and start at zero, so an untrained head is exactly the shared one. Training updates
:math:`W_c` only from images of class :math:`c` (the class whose CAM gave the seeds), while
the shared part learns from every image; the residual learns what separates class
:math:`c`'s objects from the others. Only the requested classes' residuals are evaluated (one
grouped convolution), so the cost does not grow with the number of classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcam.core.validation import check_int

__all__ = ["ClassConditionalHead", "apply_head"]


class ClassConditionalHead(nn.Module):
    r"""Shared 2-logit head plus a zero-initialised residual per class.

    Args:
        shared: the decoder's own segmentation head (a ``Conv2d`` with 2 output channels).
        num_classes: number of classes of the classifier.

    Example:
        >>> head = ClassConditionalHead(nn.Conv2d(4, 2, 3, padding=1), num_classes=3)
        >>> x = torch.rand(2, 4, 5, 5)
        >>> torch.allclose(head(x, torch.tensor([0, 2])), head.shared(x), atol=1e-6)  # untrained
        True
        >>> head(x, torch.tensor([0, 2])).shape
        torch.Size([2, 2, 5, 5])
    """

    def __init__(self, shared: nn.Module, num_classes: int) -> None:
        super().__init__()
        if not isinstance(shared, nn.Conv2d) or shared.groups != 1:
            raise TypeError(f"shared must be an ungrouped nn.Conv2d, got {shared!r}")
        self.shared = shared
        self.num_classes = check_int(num_classes, "num_classes")
        ref = shared.weight
        self.weight = nn.Parameter(torch.zeros(num_classes, *ref.shape, dtype=ref.dtype, device=ref.device))
        self.bias = nn.Parameter(torch.zeros(num_classes, ref.shape[0], dtype=ref.dtype, device=ref.device))

    def forward(self, x: Tensor, classes: Tensor | None = None) -> Tensor:
        """Logits ``(B, 2, h, w)`` for class ``classes[b]`` of image ``b`` (``None``: shared head only).

        Raises:
            ValueError: ``classes`` is not a ``(B,)`` integer tensor of valid classes.
        """
        if classes is None:
            return self.shared(x)
        if not isinstance(classes, Tensor) or classes.shape != (x.shape[0],) \
                or classes.dtype.is_floating_point or classes.dtype == torch.bool:
            raise ValueError(f"classes must be a ({x.shape[0]},) integer tensor, got {classes!r}")
        classes = classes.to(x.device)
        if bool(((classes < 0) | (classes >= self.num_classes)).any()):
            raise ValueError(f"classes {classes.tolist()} out of range for {self.num_classes} classes")
        batch, channels = x.shape[:2]
        # Both convolutions are linear in their weights, so one grouped convolution with the
        # summed per-image weights gives z_c (measured: faster on CPU than the shared conv alone
        # plus a grouped residual).
        weight = (self.shared.weight + self.weight[classes]).to(x.dtype)   # (B, 2, C, k, k)
        bias = self.bias[classes]
        if self.shared.bias is not None:
            bias = bias + self.shared.bias
        out = F.conv2d(
            x.reshape(1, batch * channels, *x.shape[-2:]), weight.flatten(0, 1),
            bias.to(x.dtype).flatten(), stride=self.shared.stride, padding=self.shared.padding,
            dilation=self.shared.dilation, groups=batch,
        )
        return out.view(batch, -1, *out.shape[-2:])

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


def apply_head(head: nn.Module, x: Tensor, classes: Tensor | None) -> Tensor:
    """``head(x)``, or ``head(x, classes)`` for a :class:`ClassConditionalHead`.

    Raises:
        ValueError: ``classes`` given to a decoder without a class-conditional head.
    """
    if isinstance(head, ClassConditionalHead):
        return head(x, classes)
    if classes is not None:
        raise ValueError("classes were given but this decoder has no class-conditional head "
                         "(build it with num_classes > 0)")
    return head(x)
