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


def test_vit_explicit_layer_without_reshape_is_reshaped_automatically() -> None:
    model = small_vit(32)
    x = torch.rand(1, 3, 32, 32)
    auto = cams.GradCAM(model, "encoder.layers.encoder_layer_11.ln_1")(x, 1)
    manual = cams.GradCAM(
        model, "encoder.layers.encoder_layer_11.ln_1", reshape_transform=cams.vit_reshape_transform
    )(x, 1)
    assert auto.shape == (1, 2, 2) and torch.allclose(auto, manual)


def test_non_spatial_layer_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="reshape_transform"):
        cams.GradCAM(small_vit(32), "heads")(torch.rand(1, 3, 32, 32))


# Every torchvision family (and timm's) with `cams.create(name, model)` and nothing else:
# the layer, the reshape of tokens / channels-last maps and the grid are found automatically.
DEFAULTS = {
    "alexnet": ({}, 64, "features.11"),  # features.12 is 1 x 1 at 64 px
    "vgg11": ({}, 64, None),
    "squeezenet1_1": ({}, 64, None),
    "resnet18": ({}, 64, "layer4"),
    "densenet121": ({}, 64, None),
    "inception_v3": ({"init_weights": False, "aux_logits": False}, 107, "Mixed_7c"),
    "googlenet": ({"init_weights": False, "aux_logits": False}, 64, "inception5b"),
    "mobilenet_v2": ({}, 64, None),
    "mobilenet_v3_small": ({}, 64, None),
    "mnasnet0_5": ({}, 64, "layers"),
    "shufflenet_v2_x0_5": ({}, 64, "conv5"),
    "efficientnet_b0": ({}, 64, None),
    "regnet_x_400mf": ({}, 64, None),
    "convnext_tiny": ({}, 64, "features"),
    "vit_b_16": ({"image_size": 48}, 48, "encoder.layers.encoder_layer_11.ln_1"),
    "swin_t": ({}, (96, 64), "permute"),
    "swin_v2_t": ({}, (64, 96), "permute"),
    "maxvit_t": ({}, 224, "blocks.3"),
}


@functools.cache
def build_default(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, num_classes=5, **DEFAULTS[name][0]).eval()


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_create_with_defaults_on_every_torchvision_family(name: str) -> None:
    side = DEFAULTS[name][1]
    h, w = side if isinstance(side, tuple) else (side, side)
    model = build_default(name)
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    extractor = cams.create("gradcam", model)
    maps = extractor.explain(x, 2)
    assert maps.shape == (1, h, w) and bool(torch.isfinite(maps).all())
    if DEFAULTS[name][2] is not None:
        assert extractor.target_name == DEFAULTS[name][2]
    assert all(not m._forward_hooks for m in model.modules())


def test_swin_non_square_grid_is_channels_last() -> None:
    model = build_default("swin_t")
    x = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(0))
    raw = cams.create("gradcam", model, "features.5")(x, 1)  # (N, h, w, C) stage output
    assert raw.shape == (1, 6, 4)


@pytest.mark.parametrize(
    ("name", "side", "layer", "grid"),
    [
        ("resnet18", 64, "layer4", (2, 2)),
        ("efficientnet_b0", 64, "bn2", (2, 2)),
        ("convnext_atto", 64, "norm_pre", (2, 2)),
        ("vit_tiny_patch16_224", 224, "blocks.11.norm1", (14, 14)),
        ("deit_tiny_distilled_patch16_224", 224, "blocks.11.norm1", (14, 14)),
        ("swin_tiny_patch4_window7_224", 224, "norm", (7, 7)),
    ],
)
def test_create_with_defaults_on_timm(name: str, side: int, layer: str, grid: tuple) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=5).eval()
    extractor = cams.create("gradcam", model)
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    raw = extractor(x, 1)
    assert extractor.target_name.startswith(layer) and raw.shape == (1, *grid)
    assert extractor.explain(x, 1).shape == (1, side, side)
