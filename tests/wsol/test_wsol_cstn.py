"""CSTN: the sampling grid and box at θ = I, the joint softmax, coverage maps, training, input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fcam.wsol import ConvSTN, CSTNModel, build, make_optimizer, train, train_step
from fcam.wsol.cstn import window_grid
from fcam.wsol.training import MethodOptions

SIZE = (64, 64)


def _identity(b, hp, wp):
    return torch.eye(2, 3).expand(b, hp, wp, 2, 3).clone()


@pytest.mark.parametrize("k, h, w", [(3, 5, 7), (4, 6, 6), (1, 3, 4)])
def test_grid_at_identity_is_the_valid_conv_window(k, h, w):
    hp, wp = h - k + 1, w - k + 1
    grid = window_grid(_identity(2, hp, wp), k, (h, w))
    assert grid.shape == (2, hp * k, wp * k, 2)
    for i in range(hp):
        for j in range(wp):
            for b in range(k):
                for a in range(k):
                    # pixel centre (j + a, i + b) in align_corners=False coordinates
                    x, y = (2 * (j + a) + 1) / w - 1, (2 * (i + b) + 1) / h - 1
                    torch.testing.assert_close(grid[1, i * k + b, j * k + a], torch.tensor([x, y]))
    # sampling that grid gives exactly the patches of a valid k x k convolution (unfold)
    torch.manual_seed(0)
    stn = ConvSTN(3, 2, kernel=k, width=4, grid=max(h, w))
    x = torch.randn(2, 3, h, w)
    patches = stn.patches(x, _identity(2, hp, wp))
    expected = F.unfold(x, k).view(2, 3 * k * k, hp, wp).permute(0, 2, 3, 1)
    torch.testing.assert_close(patches, expected)


def test_fresh_head_has_identity_theta_and_joint_softmax():
    torch.manual_seed(0)
    stn = ConvSTN(4, 3, kernel=3, width=8, grid=5).eval()
    out = stn(torch.randn(2, 4, 5, 5))
    torch.testing.assert_close(out["theta"], _identity(2, 3, 3))
    joint = out["log_joint"].exp()
    torch.testing.assert_close(joint.sum(dim=(1, 2, 3)), torch.ones(2))
    torch.testing.assert_close(out["log_joint"], out["scores"] - out["scores"].flatten(1).logsumexp(1).view(-1, 1, 1, 1))
    # the patch classifier on the identity windows is a valid k x k convolution
    x = stn.stn_input(torch.randn(1, 4, 5, 5))
    weight = stn.patch.weight.view(8, 4, 3, 3)
    hidden = F.relu(F.conv2d(x, weight, stn.patch.bias))
    scores = F.conv2d(hidden, stn.classifier.weight[:, :, None, None], stn.classifier.bias)
    hidden2 = F.relu(stn.patch(stn.patches(x, _identity(1, 3, 3))))
    torch.testing.assert_close(stn.classifier(hidden2).permute(0, 3, 1, 2), scores)


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    # layer3 is 4 x 4 at 64 px: grid 4, k = 3, 2 x 2 positions, stride 16 px
    return build(net, "cstn", 3, input_size=SIZE, width=16, cstn_kernel=3, cstn_grid=4).eval()


def test_box_at_identity_is_the_window_in_pixels(built):
    images = torch.rand(3, 3, *SIZE)
    out = built.outputs(images)
    torch.testing.assert_close(out["theta"], _identity(3, 2, 2))
    boxes = built.boxes(images, [0, 1, 2])
    best = out["log_joint"][torch.arange(3), torch.tensor([0, 1, 2])].flatten(1).argmax(1)
    for row, pos in enumerate(best.tolist()):
        i, j = divmod(pos, 2)
        expected = torch.tensor([j * 16, i * 16, (j + 3) * 16, (i + 3) * 16], dtype=torch.float32)
        torch.testing.assert_close(boxes[row], expected)
    assert built.boxes(images).shape == (3, 4)  # predicted class


def test_logits_are_log_class_probabilities(built):
    images = torch.rand(2, 3, *SIZE)
    out = built.outputs(images)
    torch.testing.assert_close(out["logits"].exp(), out["log_joint"].exp().sum(dim=(2, 3)))
    torch.testing.assert_close(built(images).exp().sum(1), torch.ones(2))


def test_cams_are_the_weighted_union_of_windows(built):
    images = torch.rand(2, 3, *SIZE)
    maps = built.cams(images, [1, 2])
    out = built.outputs(images)
    expected = torch.zeros(2, 16, 16)
    for b, c in enumerate([1, 2]):
        cond = torch.softmax(out["log_joint"][b, c].flatten(), 0)  # p(i, j | c)
        for pos, p in enumerate(cond):
            i, j = divmod(pos, 2)
            # window rows i..i+2, cols j..j+2 of the 4 x 4 grid, rendered 4 x finer
            expected[b, 4 * i:4 * (i + 3), 4 * j:4 * (j + 3)] += p
    torch.testing.assert_close(maps, expected)
    assert maps.max() <= 1 + 1e-6


def test_corners_follow_theta(built):
    from fcam.wsol.cstn import _corners

    theta = torch.tensor([[0.5, 0.0, 0.2], [0.0, 0.25, -0.4]]).expand(1, 1, 1, 2, 3)
    xs, ys = _corners(theta, 4)  # one position: centre (1.5, 1.5), half side 2 map pixels
    assert xs.min() == pytest.approx(2.0 + 2 * (-0.5 + 0.2)) and xs.max() == pytest.approx(2.0 + 2 * 0.7)
    assert ys.min() == pytest.approx(2.0 + 2 * (-0.25 - 0.4)) and ys.max() == pytest.approx(2.0 + 2 * (0.25 - 0.4))


def test_loss_is_nll_plus_theta_regulariser(built):
    images, labels = torch.rand(2, 3, *SIZE), torch.tensor([0, 2])
    built.eval()
    with torch.no_grad():
        built.heads.localisation[-1].weight.normal_(0, 0.01)
        loss, _ = built.training_loss(images, labels, MethodOptions(cstn_theta_weight=0.5))
        out = built.outputs(images)
        reg = ((out["theta"] - torch.eye(2, 3)) ** 2).sum()
        assert reg > 0
        torch.testing.assert_close(loss, -out["logits"][[0, 1], labels].mean() + 0.5 * reg)
        built.heads.localisation[-1].weight.zero_()


@pytest.mark.parametrize("arch, layer", [("resnet18", "layer3"), ("vgg11_bn", "features.27"),
                                         ("mobilenet_v2", "features.13")])
def test_build_on_torchvision_reads_the_stride_16_stage(arch, layer):
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None).eval()
    if arch == "vgg11_bn":
        net.classifier = torch.nn.Identity()
    built = build(net, "cstn", 3, input_size=SIZE, width=16, cstn_kernel=3, cstn_grid=6)
    assert isinstance(built, CSTNModel) and built.feature_layer == layer
    assert built.target_layer == f"backbone.{layer}"
    images = torch.rand(2, 3, *SIZE)
    assert built(images).shape == (2, 3)
    assert built.cams(images).shape == (2, 24, 24)
    boxes = built.boxes(images, [0, 1])
    assert boxes.shape == (2, 4) and (boxes[:, 2:] > boxes[:, :2]).all()
    assert (boxes >= 0).all() and (boxes <= 64).all()


def test_trains_on_a_repeated_batch():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    model = build(net, "cstn", 3, input_size=SIZE, width=16, cstn_kernel=3, cstn_grid=4)
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(4, 3, *SIZE, generator=gen), torch.tensor([0, 1, 2, 0])
    model.train()
    opt = make_optimizer(model, lr=0.003)  # the joint softmax is sharp: the paper's rate 1e-3
    losses = [train_step(model, images, labels, "cstn", opt)[0] for _ in range(6)]
    assert losses[-1] < losses[0] / 10
    local = {id(p) for p in model.heads.localisation.parameters()}
    assert [g["lr"] for g in opt.param_groups] == [0.003, pytest.approx(0.03)]
    assert local.isdisjoint(id(p) for p in opt.param_groups[1]["params"])  # θ at the base rate
    assert not torch.equal(model.outputs(images)["theta"], _identity(4, 2, 2))  # θ learns
    history = train(model, [(images, labels)], "cstn", epochs=1, progress=False, cstn_theta_weight=0.0)
    assert torch.isfinite(torch.tensor(history[0]["loss"]))
    assert torch.isfinite(model.cams(images)).all()


def test_bad_input():
    net = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match="cstn_kernel"):
        build(net, "cstn", 3, input_size=SIZE, cstn_kernel=9, cstn_grid=8)
    with pytest.raises(ValueError, match="cstn_grid"):
        build(net, "cstn", 3, input_size=SIZE, cstn_grid=0)
    with pytest.raises(TypeError, match="cstn_kernel"):
        build(net, "spol", 3, input_size=SIZE, cstn_kernel=3)
    model = build(net, "cstn", 3, input_size=SIZE, width=8, cstn_kernel=3, cstn_grid=4)
    with pytest.raises(ValueError, match="images"):
        model.boxes(torch.rand(3, *SIZE))
    with pytest.raises(ValueError, match="targets"):
        model.cams(torch.rand(1, 3, *SIZE), [3])
    with pytest.raises(ValueError, match="cstn_theta_weight"):
        train(model, [(torch.rand(2, 3, *SIZE), torch.tensor([0, 1]))], "cstn", progress=False,
              cstn_theta_weight=-1.0)
