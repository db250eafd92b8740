"""Feature-pyramid discovery and capture hooks."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from fcam.upscalers import Pyramid, capture_features, discover_pyramid

# Expected skips (deepest first) for each torchvision family, derived by hand from the
# architectures: the stage container that ends each stride.
FAMILIES = {
    "resnet18": ("layer4", ["layer3", "layer2", "layer1", "relu"]),
    "resnext50_32x4d": ("layer4", ["layer3", "layer2", "layer1", "relu"]),
    "vgg11": ("features", ["features.19", "features.14", "features.9", "features.4"]),
    "vgg11_bn": ("features", ["features.27", "features.20", "features.13", "features.6"]),
    "inception_v3": ("Mixed_7c", ["Mixed_6e", "Mixed_5d", "Conv2d_4a_3x3", "Conv2d_2b_3x3"]),
    "densenet121": (
        "features",
        ["features.denseblock3", "features.denseblock2", "features.denseblock1", "features.relu0"],
    ),
    "mobilenet_v2": ("features", ["features.13", "features.6", "features.3", "features.1"]),
    "mobilenet_v3_small": ("features", ["features.8", "features.3", "features.1", "features.0"]),
    "efficientnet_b0": ("features", ["features.5", "features.3", "features.2", "features.1"]),
    "efficientnet_v2_s": ("features", ["features.5", "features.3", "features.2", "features.1"]),
    # ConvNeXt's stem has stride 4: no stride-2 feature exists, so that level is a gap.
    "convnext_tiny": ("features", ["features.5", "features.3", "features.1", None]),
    "regnet_y_400mf": (
        "trunk_output",
        ["trunk_output.block3", "trunk_output.block2", "trunk_output.block1", "stem"],
    ),
    "googlenet": ("inception5b", ["inception4e", "inception3b", "conv3", "conv1"]),
}


def _build(name: str) -> nn.Module:
    kw = {"init_weights": False} if name in {"inception_v3", "googlenet"} else {}
    if name == "googlenet":
        kw["aux_logits"] = False
    return getattr(tvm, name)(weights=None, **kw)


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_discovery_per_family(arch: str) -> None:
    target, expected = FAMILIES[arch]
    model = _build(arch)
    pyr = discover_pyramid(model, target)
    assert pyr.head.name == target and pyr.head.level == 5
    assert [s.name if s else None for s in pyr.skips] == expected
    assert [s.level for s in pyr.skips if s] == [lvl for lvl, e in zip((4, 3, 2, 1), expected) if e]
    assert Pyramid.from_dict(pyr.to_dict()) == pyr


def test_probe_restores_mode_and_removes_hooks() -> None:
    model = tvm.resnet18(weights=None).train()
    model.layer2.eval()
    discover_pyramid(model, "layer4")
    assert model.training and not model.layer2.training and not model.layer2[0].bn1.training
    assert all(not m._forward_hooks for m in model.modules())


def test_explicit_skips_override_and_validation() -> None:
    model = tvm.resnet18(weights=None)
    pyr = discover_pyramid(model, model.layer4, skips=["layer1", model.layer3])
    assert [s.name if s else None for s in pyr.skips] == ["layer3", None, "layer1", None]
    with pytest.raises(ValueError, match="skips: .*stride"):
        discover_pyramid(model, "layer4", skips=["layer4"])  # same stride as the head
    with pytest.raises(ValueError, match="same stride"):
        discover_pyramid(model, "layer4", skips=["layer1", "maxpool"])
    with pytest.raises(ValueError, match="close names"):
        discover_pyramid(model, "layer4", skips=["layer_1"])
    with pytest.raises(ValueError, match="target_layer .* spatial map"):
        discover_pyramid(model, "fc")


def test_no_pyramid_error_says_how_to_pass_skips() -> None:
    # The head has stride 2: no stride strictly between 2 and the head exists.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Flatten())
    with pytest.raises(ValueError, match="skips="):
        discover_pyramid(model, "0")


def test_capture_clones_before_inplace_relu() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(inplace=True))
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
    x = torch.ones(1, 1, 2, 2)
    with capture_features(model, ["0", "1"]) as feats:
        model(x)
    assert torch.equal(feats["0"], -x)  # not zeroed by the later in-place ReLU
    assert torch.equal(feats["1"], torch.zeros_like(x))
    assert not model[0]._forward_hooks and not model[1]._forward_hooks


def test_capture_removes_hooks_on_error() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 1))
    with pytest.raises(RuntimeError), capture_features(model, ["0"]):
        model(torch.ones(1, 2, 2, 2))  # wrong channels
    assert not model[0]._forward_hooks
    with pytest.raises(ValueError, match="not found"), capture_features(model, ["nope"]):
        pass
