"""EIL and MEIL: the erasing mask by hand, the erased streams against a manual forward, the
loss, the default levels on three torchvision CNNs, training and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fcam.wsol import build, eil_mask, train
from fcam.wsol.eil import eil_loss

SIZE = (32, 32)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


def test_eil_mask_by_hand():
    attention = torch.tensor([
        [[[0.0, 0.5, 0.7], [0.69, 1.0, -1.0]]],
        [[[-2.0, -1.0, 3.0], [2.1, 2.0, 0.0]]],
    ])
    # image 0: max 1.0, erase a >= 0.7; image 1: max 3.0, erase a >= 2.1
    expected = torch.tensor([
        [[[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]],
        [[[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]],
    ])
    assert torch.equal(eil_mask(attention, 0.7), expected)
    assert torch.equal(eil_mask(attention[:, 0], 0.7), expected)  # (B, h, w) gets the channel axis
    assert torch.equal(eil_mask(attention, 1.0).sum(dim=(1, 2, 3)), torch.tensor([5.0, 5.0]))  # only the max
    assert eil_mask(attention, 0.7).dtype == attention.dtype


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_eil_mask_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold"):
        eil_mask(torch.rand(1, 1, 2, 2), threshold)


def test_eil_mask_bad_shape():
    with pytest.raises(ValueError, match="attention"):
        eil_mask(torch.rand(1, 2, 2, 2), 0.5)


def test_eil_loss_is_sum_of_stream_ce():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=gen)  # 2 images, 3 streams
    labels = torch.tensor([1, 3])
    expected = sum(F.cross_entropy(logits[2 * s:2 * s + 2], labels) for s in range(3))
    torch.testing.assert_close(eil_loss(logits, labels), expected)
    with pytest.raises(ValueError, match="multiple"):
        eil_loss(logits[:5], labels)


def _stem(backbone, x):
    return backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))


def _erase(x, batch, threshold):
    unerased = x[:batch]
    return torch.cat([x, unerased * eil_mask(unerased.mean(1, keepdim=True), threshold)])


@pytest.mark.parametrize("method, levels", [("eil", ["layer2"]), ("meil", ["layer1", "layer2"])])
def test_erased_streams_match_manual_forward(net, method, levels):
    built = build(net, method, 3, feature_layer="layer3", input_size=SIZE, erase_threshold=0.6)
    assert built.taps == levels
    images = torch.rand(2, 3, *SIZE)
    built.train()
    out = built.forward_train(images, torch.tensor([0, 1]))
    assert out["logits"].shape == (2, 3)
    assert out["logits_erased"].shape == (2 * len(levels), 3)
    b = built.backbone
    x = b.layer1(_stem(b, images))
    if method == "meil":
        x = _erase(x, 2, 0.6)  # level 1: [u, e1]
    x = _erase(b.layer2(x), 2, 0.6)  # last level erases the unerased stream only
    expected = built.heads(b.layer3(x))
    torch.testing.assert_close(torch.cat([out["logits"], out["logits_erased"]]), expected)
    # inference runs the unerased stream only and the CAM is the plain CAM rule
    built.eval()
    feats = b.layer3(b.layer2(b.layer1(_stem(b, images))))
    torch.testing.assert_close(built(images), built.heads(feats))
    weights = built.heads[-1].weight[[2, 0]][:, :, None, None]
    torch.testing.assert_close(built.cams(images, [2, 0]), (weights * feats).mean(1))


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    nets = {name: torchvision.models.get_model(name, weights=None).eval()
            for name in ("resnet18", "vgg11_bn", "mobilenet_v2")}
    nets["vgg11_bn"].classifier = torch.nn.Identity()
    return nets


# VGG's stride-16 stage ends with a pooling only, so the erased input is the one before it
_LEVELS = {"resnet18": (["layer3"], ["layer2", "layer3"]),
           "vgg11_bn": (["features.20"], ["features.13", "features.20"]),
           "mobilenet_v2": (["features.13"], ["features.6", "features.13"])}


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn", "mobilenet_v2"])
@pytest.mark.parametrize("method", ["eil", "meil"])
def test_build_torchvision(nets, arch, method):
    built = build(nets[arch], method, 3, input_size=(64, 64))
    assert built.taps == _LEVELS[arch][method == "meil"]
    images = torch.rand(2, 3, 64, 64)
    built.train()
    out = built.forward_train(images, torch.tensor([0, 1]))
    assert out["logits_erased"].shape == (2 * len(built.taps), 3)
    built.eval()
    assert built(images).shape == (2, 3)
    cams = built.cams(images)
    assert cams.shape == (2, 2, 2) and torch.isfinite(cams).all()


def test_levels_option(net):
    built = build(net, "meil", 3, feature_layer="layer3", input_size=SIZE, levels=["layer2", net.layer1])
    assert built.taps == ["layer1", "layer2"]  # forward order
    with pytest.raises(ValueError, match="levels"):
        build(net, "eil", 3, feature_layer="layer3", input_size=SIZE, levels=["layer4"])
    with pytest.raises(ValueError, match="levels"):
        build(net, "eil", 3, feature_layer="layer3", input_size=SIZE, levels=["layer2", "layer2"])


@pytest.mark.parametrize("threshold", [-0.01, 1.01])
def test_build_bad_threshold(net, threshold):
    with pytest.raises(ValueError, match="erase_threshold"):
        build(net, "eil", 3, input_size=SIZE, erase_threshold=threshold)


@pytest.mark.parametrize("method", ["eil", "meil"])
def test_losses_decrease_on_repeated_batch(net, method):
    built = build(net, method, 3, feature_layer="layer2", input_size=SIZE)
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(6, 3, *SIZE, generator=gen), torch.arange(6) % 3)
    history = train(built, [batch], method, epochs=8, lr=0.01, progress=False)
    losses = [h["loss"] for h in history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) < sum(losses[:2])
    cams = built.cams(batch[0], batch[1])
    assert cams.shape == (6, 4, 4) and torch.isfinite(cams).all()


def test_train_needs_built_eil_model(net):
    plain = build(net, "cam", 3, feature_layer="layer2", input_size=SIZE)
    with pytest.raises(ValueError, match="method"):
        train(plain, [(torch.rand(2, 3, *SIZE), torch.tensor([0, 1]))], "eil", progress=False)
    built = build(net, "eil", 3, feature_layer="layer2", input_size=SIZE)
    with pytest.raises(ValueError, match="images"):
        train(built, [(torch.rand(3, *SIZE), torch.tensor([0]))], "eil", progress=False)
    with pytest.raises(ValueError, match="images"):
        built.cams(torch.rand(3, *SIZE))
