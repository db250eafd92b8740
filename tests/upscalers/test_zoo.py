"""F-CAM with default arguments on every torchvision classification family (and timm).

The smallest builder of each family, random weights, a small input: ``FCAM(model)`` finds the
CAM layer, the token reshape and the pyramid by itself, ``fit`` runs one step and ``explain``
returns maps at the input resolution. One model per family runs by default; the heavier
members of a family are marked ``slow``. The timm families run when timm (a test extra) is
installed.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from fcam import FCAM

# name -> (builder kwargs, input side, family). Kwargs only shrink the input the model accepts
# (ViT's image_size) or switch off auxiliary heads and slow init.
NOAUX = {"init_weights": False, "aux_logits": False}
CI = {
    "alexnet": ({}, 64, "alexnet"),
    "vgg11": ({}, 64, "vgg"),
    "squeezenet1_1": ({}, 64, "squeezenet"),
    "resnet18": ({}, 64, "resnet"),
    "densenet121": ({}, 64, "densenet"),
    "inception_v3": (NOAUX, 107, "inception_v3"),
    "googlenet": (NOAUX, 64, "googlenet"),
    "mobilenet_v2": ({}, 64, "mobilenet_v2"),
    "mobilenet_v3_small": ({}, 64, "mobilenet_v3"),
    "mnasnet0_5": ({}, 64, "mnasnet"),
    "shufflenet_v2_x0_5": ({}, 64, "shufflenet_v2"),
    "efficientnet_b0": ({}, 64, "efficientnet"),
    "regnet_x_400mf": ({}, 64, "regnet"),
    "convnext_tiny": ({}, 64, "convnext"),
    "vit_b_16": ({"image_size": 32}, 32, "vit"),
    "swin_t": ({}, 64, "swin"),
    "maxvit": ({}, 224, "maxvit"),  # the MaxVit class, narrow (maxvit_t itself is slow)
}
SLOW = {
    "vgg11_bn": ({}, 64, "vgg"),
    "resnext50_32x4d": ({}, 64, "resnet"),
    "wide_resnet50_2": ({}, 64, "resnet"),
    "mobilenet_v3_large": ({}, 64, "mobilenet_v3"),
    "efficientnet_v2_s": ({}, 64, "efficientnet_v2"),
    "regnet_y_400mf": ({}, 64, "regnet"),
    "swin_v2_t": ({}, 64, "swin_v2"),
    "vit_b_32": ({"image_size": 64}, 64, "vit"),
    "maxvit_t": ({}, 224, "maxvit"),  # partition size 7 at every stage: 224 px only
}
TIMM = {
    "resnet18": 64,
    "efficientnet_b0": 64,
    "convnext_atto": 64,
    "vit_tiny_patch16_224": 224,
    "deit_tiny_distilled_patch16_224": 224,
    "swin_tiny_patch4_window7_224": 224,
}


def build(name: str) -> nn.Module:
    kwargs = {**CI, **SLOW}[name][0]
    torch.manual_seed(0)
    if name == "maxvit":  # maxvit_t's class and partition size 7 (224 px), narrow stages
        from torchvision.models.maxvit import MaxVit

        return MaxVit(
            input_size=(224, 224), stem_channels=16, partition_size=7, block_channels=[16, 32, 48, 64],
            block_layers=[1, 1, 1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=4,
        ).eval()  # fmt: skip
    return getattr(tvm, name)(weights=None, num_classes=4, **kwargs).eval()


def run_defaults(model: nn.Module, side: int) -> FCAM:
    gen = torch.Generator().manual_seed(0)
    fc = FCAM(model)
    fc.fit([(torch.randn(2, 3, side, side, generator=gen), torch.tensor([0, 1]))], epochs=1,
           progress=False)  # fmt: skip
    x = torch.randn(2, 3, side, side, generator=gen)
    maps = fc.explain(x)
    assert maps.shape == (2, side, side) and maps.dtype == torch.float32
    assert bool(torch.isfinite(maps).all()) and 0 <= float(maps.min()) <= float(maps.max()) <= 1
    assert all(not m._forward_hooks for m in model.modules())
    assert not any(p.requires_grad is False for p in fc.decoder.parameters())
    return fc


def test_every_torchvision_family_is_covered_in_ci() -> None:
    families = {
        "alexnet", "vgg", "squeezenet", "resnet", "densenet", "inception_v3", "googlenet",
        "mobilenet_v2", "mobilenet_v3", "mnasnet", "shufflenet_v2", "efficientnet", "regnet",
        "convnext", "vit", "swin", "maxvit",
    }  # fmt: skip
    assert {f for _, _, f in CI.values()} == families
    assert {f for _, _, f in SLOW.values()} - families <= {"efficientnet_v2", "swin_v2"}


@pytest.mark.parametrize("name", list(CI))
def test_fcam_defaults_torchvision(name: str) -> None:
    fc = run_defaults(build(name), CI[name][1])
    if CI[name][2] == "vit":
        assert fc.target_name.endswith("encoder_layer_11.ln_1")
        assert type(fc.decoder).__name__ == "DPTDecoder"
    if CI[name][2] == "swin":
        assert [s.layout for s in fc.pyramid.skips if s] == ["nhwc"] * 3


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW))
def test_fcam_defaults_torchvision_slow(name: str) -> None:
    run_defaults(build(name), SLOW[name][1])


@pytest.mark.parametrize("name", list(TIMM))
def test_fcam_defaults_timm(name: str) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=4).eval()
    fc = run_defaults(model, TIMM[name])
    if name.startswith(("vit", "deit")):
        assert fc.target_name == "blocks.11.norm1"
        assert fc.pyramid.head.prefix == (2 if "distilled" in name else 1)
    if name.startswith("swin"):
        assert fc.pyramid.head.layout == "nhwc"


@pytest.mark.slow
def test_save_load_round_trip_for_a_token_model(tmp_path: object) -> None:
    from pathlib import Path

    model = build("vit_b_16")
    fc = run_defaults(model, 32)
    path = Path(str(tmp_path)) / "vit.pt"
    fc.save(path)
    again = FCAM.load(path, model)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert again.pyramid == fc.pyramid
    assert torch.allclose(again.explain(x), fc.explain(x))
