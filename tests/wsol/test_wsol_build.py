"""fcam.wsol.build on torchvision CNNs: heads, feature layers, CAM rules and bad input."""

from __future__ import annotations

import pytest
import torch
import torchvision

from fcam.wsol import ADL, WSOLModel, available, build

SIZE = (64, 64)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    nets = {name: torchvision.models.get_model(name, weights=None).eval()
            for name in ("resnet18", "vgg11_bn", "mobilenet_v2")}
    nets["vgg11_bn"].classifier = torch.nn.Identity()  # 100 M unused parameters: faster copies
    return nets


def test_available():
    assert available() == ["cam", "has", "cutmix", "adl", "acol", "spg", "eil", "meil", "danet",
                           "spol", "cstn"]


_LAYERS = {"resnet18": ("layer4", "layer3"), "vgg11_bn": ("features", "features.27"),
           "mobilenet_v2": ("features", "features.13")}
_CASES = [("resnet18", m) for m in ("cam", "adl", "acol", "spg")] + [
    ("vgg11_bn", "adl"), ("vgg11_bn", "acol"), ("mobilenet_v2", "cam"), ("mobilenet_v2", "spg")]


@pytest.mark.parametrize("arch, method", _CASES)
def test_build_torchvision(nets, arch, method):
    feature, early = _LAYERS[arch]
    net = nets[arch]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    built = build(net, method, 3, input_size=SIZE, width=16)
    assert isinstance(built, WSOLModel) and built.method == method
    assert (built.feature_layer, built.early_layer) == (feature, early)
    assert built.target_layer == f"backbone.{feature}"
    images = torch.rand(2, 3, *SIZE)
    built.eval()
    assert built(images).shape == (2, 3)
    cams = built.cams(images, [0, 2])
    assert cams.shape == (2, 2, 2) and torch.isfinite(cams).all()
    assert built.cams(images).shape == (2, 2, 2)  # predicted class
    built.train()
    out = built.forward_train(images, torch.tensor([0, 1]))
    assert out["logits"].shape == (2, 3)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # original untouched
    assert sum(isinstance(m, ADL) for m in built.modules()) == (2 if method == "adl" else 0)


def test_cam_rule_is_fc_weighted_mean(nets):
    built = build(nets["resnet18"], "cam", 3, input_size=SIZE).eval()
    images = torch.rand(2, 3, *SIZE)
    feats = built.backbone.layer4(built.backbone.layer3(built.backbone.layer2(built.backbone.layer1(
        built.backbone.maxpool(built.backbone.relu(built.backbone.bn1(built.backbone.conv1(images))))))))
    weights = built.heads[-1].weight[[1, 2]]
    expected = (weights[:, :, None, None] * feats).mean(1)
    torch.testing.assert_close(built.cams(images, [1, 2]), expected)


def test_feature_layer_option_and_seeded_heads(nets):
    a = build(nets["resnet18"], "spg", 3, feature_layer="layer3", input_size=SIZE, width=8, seed=1)
    b = build(nets["resnet18"], "spg", 3, feature_layer="layer3", input_size=SIZE, width=8, seed=1)
    assert (a.feature_layer, a.early_layer) == ("layer3", "layer2")
    assert all(torch.equal(x, y) for x, y in zip(a.heads.parameters(), b.heads.parameters()))
    assert a.eval().cams(torch.rand(1, 3, *SIZE)).shape == (1, 4, 4)


def test_adl_identity_in_eval_mode(nets):
    plain = build(nets["resnet18"], "cam", 3, input_size=SIZE, seed=3).eval()
    adl = build(nets["resnet18"], "adl", 3, input_size=SIZE, seed=3, adl_drop_rate=1.0,
                adl_drop_threshold=0.1).eval()
    images = torch.rand(2, 3, *SIZE)
    torch.testing.assert_close(adl(images), plain(images))
    torch.testing.assert_close(adl.cams(images, 0), plain.cams(images, 0))
    adl.train()
    feats, _ = adl.features(images)
    assert (feats == 0).any()  # the drop mask hides most of the map in training


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        ({"method": "gradcam"}, ValueError, "method"),
        ({"method": 3}, TypeError, "method"),
        ({"adl_drop_rate": 1.5}, ValueError, "drop_rate"),
        ({"adl_drop_threshold": -0.5}, ValueError, "drop_threshold"),
        ({"acol_threshold": 1.01}, ValueError, "threshold"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"feature_layer": "layer9"}, ValueError, "layer9"),
    ],
)
def test_build_bad_input(nets, kwargs, exc, word):
    args = {"method": "adl", "num_classes": 3, "input_size": SIZE, **kwargs}
    with pytest.raises(exc, match=word):
        build(nets["resnet18"], **args)


def test_cams_bad_images(nets):
    built = build(nets["resnet18"], "cam", 3, input_size=SIZE)
    with pytest.raises(ValueError, match="images"):
        built.cams(torch.rand(3, *SIZE))
    with pytest.raises(ValueError, match="targets"):
        built.cams(torch.rand(1, 3, *SIZE), [5])
    with pytest.raises(TypeError, match="model"):
        build("resnet18", "cam", 3)
