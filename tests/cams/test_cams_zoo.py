"""Every method on randomly initialised torchvision classifiers (weights=None, small inputs).

Gradient methods and CAM run at the automatically located layer. The Score-CAM family
needs one forward pass per channel (and per sample), so it runs on an early, narrow layer
of each model here, and at the located layer of the three cheapest models in a slow test. CAM raises a clear
ValueError on models without a global-pool + linear head (vgg11_bn, mobilenet_v3_small).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from torch import Tensor, nn

from fcam import cams

# model -> (input side, early narrow layer for the Score-CAM family)
ZOO = {
    "resnet18": (64, "layer1"),
    "vgg11_bn": (64, "features.3"),
    "densenet121": (64, "features.pool0"),
    "mobilenet_v3_small": (64, "features.1"),
    "efficientnet_b0": (64, "features.1"),
    "convnext_tiny": (64, "features.0"),
    "regnet_y_400mf": (64, "stem"),
    "inception_v3": (107, "Conv2d_2a_3x3"),  # 107 px: Mixed_7c is 2x2 (1x1 at 75 px)
}
NO_GAP_LINEAR_HEAD = {"vgg11_bn", "mobilenet_v3_small"}
GRADIENT = ["gradcam", "gradcampp", "smoothgradcampp", "xgradcam", "layercam"]
SCORE = ["scorecam", "sscam", "iscam"]
OPTIONS = {
    "smoothgradcampp": {"num_samples": 2, "seed": 0},
    "scorecam": {"batch_size": 128},
    "sscam": {"batch_size": 128, "num_samples": 1, "seed": 0},
    "iscam": {"batch_size": 128, "num_samples": 2},
}


@functools.cache
def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    extra = {"init_weights": False, "aux_logits": False} if name == "inception_v3" else {}
    return getattr(torchvision.models, name)(weights=None, **extra).eval()


def images(name: str, batch: int = 2) -> Tensor:
    side = ZOO[name][0]
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))


def layer_shape(model: nn.Module, layer: nn.Module, x: Tensor) -> torch.Size:
    shapes: list[torch.Size] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return shapes[-1]


def check(extractor: cams._CAM, model: nn.Module, x: Tensor) -> None:
    maps = extractor(x, [0, 5])
    expected = layer_shape(model, extractor.target_layer, x)
    assert maps.shape == (x.shape[0], *expected[-2:])
    assert maps.dtype == torch.float32
    assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("method", ["cam", *GRADIENT])
@pytest.mark.parametrize("model_name", list(ZOO))
def test_gradient_and_cam_methods(model_name: str, method: str) -> None:
    model, x = build(model_name), images(model_name)
    extractor = cams.create(method, model, **OPTIONS.get(method, {}))
    if method == "cam" and model_name in NO_GAP_LINEAR_HEAD:
        with pytest.raises(ValueError, match="global-average-pool"):
            extractor(x)
        return
    check(extractor, model, x)


@pytest.mark.parametrize("method", SCORE)
@pytest.mark.parametrize("model_name", list(ZOO))
def test_score_family_on_early_layer(model_name: str, method: str) -> None:
    model, x = build(model_name), images(model_name, batch=1)
    extractor = cams.create(method, model, ZOO[model_name][1], **OPTIONS[method])
    maps = extractor(x, 3)
    assert maps.shape == (1, *layer_shape(model, extractor.target_layer, x)[-2:])
    assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["resnet18", "mobilenet_v3_small", "regnet_y_400mf"])
def test_scorecam_at_located_layer(model_name: str) -> None:
    model, x = build(model_name), images(model_name, batch=1)
    extractor = cams.ScoreCAM(model, batch_size=256)
    maps = extractor(x)
    assert extractor.target_name is not None
    assert maps.shape == (1, *layer_shape(model, extractor.target_layer, x)[-2:])
    assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0


@functools.cache
def small_vit(image_size: int) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vit_b_16(weights=None, image_size=image_size).eval()


@pytest.mark.parametrize("method", GRADIENT)
@pytest.mark.parametrize(("image_size", "grid"), [(32, 2), (48, 3)])
def test_vit_gradient_methods(method: str, image_size: int, grid: int) -> None:
    model = small_vit(image_size)
    extractor = cams.create(
        method, model, "encoder.layers.encoder_layer_11.ln_1",
        reshape_transform=cams.vit_reshape_transform, **OPTIONS.get(method, {}),
    )  # fmt: skip
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(2))
    maps = extractor(x, [1, 2])
    assert maps.shape == (2, grid, grid)
    assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0
    assert all(not m._forward_hooks for m in model.modules())


def test_vit_without_reshape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="reshape_transform"):
        cams.GradCAM(small_vit(32), "encoder.layers.encoder_layer_11.ln_1")(torch.rand(1, 3, 32, 32))
