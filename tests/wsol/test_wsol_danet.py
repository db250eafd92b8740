"""DANet: the cosine loss against a loop over pairs (and gradcheck), the heads' logits, maps
and loss by hand, hierarchies (validation and k-means), build on three CNNs and training."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fcam import FCAM
from fcam.data import SyntheticWSOL
from fcam.wsol import build, danet_cosine_loss, hierarchy_from_weights, train
from fcam.wsol.danet import check_hierarchy, danet_loss
from fcam.wsol.hierarchy import kmeans

SIZE = (32, 32)
TREE = [[0, 0, 1, 2], [0, 1, 1]]  # 4 classes -> 3 parents -> 2 roots


def _loop_loss(maps):
    total = 0.0
    b, n = maps.shape[:2]
    for i in range(b):
        pairs = sum(F.cosine_similarity(maps[i, p].flatten(), maps[i, q].flatten(), dim=0)
                    for p, q in itertools.combinations(range(n), 2))
        total += abs(pairs) / (n * (n - 1) / 2)
    return total / b


@pytest.mark.parametrize("shape", [(1, 2, 3, 3), (3, 5, 4, 2), (2, 12, 7, 7)])
def test_cosine_loss_matches_pair_loop(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    maps = torch.randn(*shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(danet_cosine_loss(maps), _loop_loss(maps))


def test_cosine_loss_by_hand_and_sign_cancellation():
    maps = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]]])
    expected = (0.0 + 2 * 2 ** -0.5) / 3
    assert danet_cosine_loss(maps).item() == pytest.approx(expected)
    opposite = torch.tensor([[[[1.0, 2.0]], [[-1.0, -2.0]], [[2.0, -1.0]]]])  # cos: -1, 0, 0
    assert danet_cosine_loss(opposite).item() == pytest.approx(1 / 3)
    plus_minus = torch.tensor([[[[1.0, 0.0]], [[1.0, 0.0]], [[-1.0, 0.0]]]])  # 1 - 1 - 1 = -1 -> |.|
    assert danet_cosine_loss(plus_minus).item() == pytest.approx(1 / 3)
    zero = torch.zeros(1, 2, 2, 2)
    assert danet_cosine_loss(zero).item() == 0.0


def test_cosine_loss_gradcheck():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(danet_cosine_loss, (maps,))


@pytest.mark.parametrize("maps", [torch.rand(2, 1, 3, 3), torch.rand(2, 3, 3)])
def test_cosine_loss_bad_maps(maps):
    with pytest.raises(ValueError, match="maps"):
        danet_cosine_loss(maps)


def test_check_hierarchy_accepts_tree():
    assert check_hierarchy(TREE, 4) == TREE
    assert check_hierarchy(None, 4) == []


@pytest.mark.parametrize("hierarchy", [
    [[0, 0, 1]],                 # skips class 3 (too short)
    [[0, 0, 1, 1, 0]],           # one entry too many
    [[0, 0, 2, 2]],              # skips parent 1
    [[0, -1, 1, 1]],             # negative index
    [[0, 0, 1, 2], [0, 1]],      # 3 parents but the root level lists 2
    [[0, 0, 1, 2], [0, 3, 1]],   # top level of 4 roots skips root 2
    [[0, 0, 1, 1.0]],            # not ints
    [],
    "0011",
])
def test_check_hierarchy_rejects(hierarchy):
    with pytest.raises(ValueError, match="hierarchy"):
        check_hierarchy(hierarchy, 4)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


def test_heads_logits_maps_and_loss_by_hand(net):
    built = build(net, "danet", 4, feature_layer="layer3", input_size=SIZE, k=3, width=8, hierarchy=TREE)
    assert built.taps == ["layer2", "layer1"]
    images = torch.rand(2, 3, *SIZE)
    labels = torch.tensor([3, 1])
    built.eval()
    b = built.backbone
    x1 = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(images)))))
    x2 = b.layer2(x1)
    x3 = b.layer3(x2)
    raw = [head(x) for head, x in zip(built.heads.levels, (x3, x2, x1))]
    assert [tuple(r.shape) for r in raw] == [(2, 12, 2, 2), (2, 9, 4, 4), (2, 6, 8, 8)]
    logits = [r.view(2, -1, 3, *r.shape[-2:]).mean(dim=(2, 3, 4)) for r in raw]
    out = built.forward_train(images, labels)
    torch.testing.assert_close(out["logits"], logits[0])
    torch.testing.assert_close(out["logits_1"], logits[1])
    torch.testing.assert_close(out["logits_2"], logits[2])
    torch.testing.assert_close(built(images), logits[0])
    # ground-truth maps: class 3 -> parent 2 -> root 1; class 1 -> parent 0 -> root 0
    level_labels = [labels, torch.tensor([2, 0]), torch.tensor([1, 0])]
    gt = torch.cat([F.interpolate(r.view(2, -1, 3, *r.shape[-2:])[torch.arange(2), lab], size=(8, 8),
                                  mode="bilinear", align_corners=False)
                    for r, lab in zip(raw, level_labels)], dim=1)
    torch.testing.assert_close(out["gt_maps"], gt)
    # the CAM: sum of the levels' mean ReLU maps at the 8 x 8 root size
    cam = sum(F.interpolate(r.view(2, -1, 3, *r.shape[-2:])[torch.arange(2), lab].relu().mean(1, keepdim=True),
                            size=(8, 8), mode="bilinear", align_corners=False)
              for r, lab in zip(raw, level_labels))[:, 0]
    torch.testing.assert_close(built.cams(images, labels), cam)
    # the loss: 0.5 · sum of CEs + alpha · cosine over a subset of half the 9 maps (5)
    gen = torch.Generator().manual_seed(4)
    loss = danet_loss(out, labels, built.heads, 0.3, None, gen)
    index = torch.randperm(9, generator=torch.Generator().manual_seed(4))[:5]
    ce = sum(F.cross_entropy(lg, lab) for lg, lab in zip(logits, level_labels))
    torch.testing.assert_close(loss, 0.5 * ce + 0.3 * danet_cosine_loss(gt[:, index]))


def test_dda_alone_without_hierarchy(net):
    built = build(net, "danet", 3, feature_layer="layer3", input_size=SIZE, k=4, width=8)
    assert built.taps == [] and len(built.heads.levels) == 1
    images, labels = torch.rand(2, 3, *SIZE), torch.tensor([0, 2])
    built.train()
    out = built.forward_train(images, labels)
    assert out["gt_maps"].shape == (2, 4, 2, 2)
    loss = danet_loss(out, labels, built.heads, 0.5, None, None)
    expected = F.cross_entropy(out["logits"], labels) + 0.5 * danet_cosine_loss(out["gt_maps"])
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="danet_subset"):
        danet_loss(out, labels, built.heads, 0.5, 5, None)
    assert built.eval().cams(images).shape == (2, 2, 2)


@pytest.mark.parametrize("kwargs, word", [
    ({"k": 1}, "k"),
    ({"k": 0}, "k"),
    ({"hierarchy": [[0, 0]]}, "hierarchy"),            # skips class 2
    ({"hierarchy": [[0, 0, 2]]}, "hierarchy"),         # skips parent 1
    ({"hierarchy": [[0, 1, 1], [0, 0], [0], [0]]}, "hierarchy"),  # 4 levels, 3 stages before layer3
    ({"method": "danett"}, "method"),
])
def test_build_bad_input(net, kwargs, word):
    args = {"method": "danet", "num_classes": 3, "feature_layer": "layer3", "input_size": SIZE, **kwargs}
    with pytest.raises(ValueError, match=word):
        build(net, **args)


def test_hierarchy_from_weights_groups_directions():
    gen = torch.Generator().manual_seed(0)
    directions = torch.eye(3, 8)
    # 9 classes: 3 around each direction, scaled differently (normalisation removes the scale)
    weights = torch.cat([d * s + 0.05 * torch.randn(3, 8, generator=gen)
                         for d, s in zip(directions, (1.0, 5.0, 0.2))])
    order = torch.randperm(9, generator=gen)
    tree = hierarchy_from_weights(weights[order], [3, 2])
    parents = tree[0]
    groups = [{parents[i] for i in range(9) if int(order[i]) // 3 == g} for g in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3
    assert check_hierarchy(tree, 9) == tree and len(tree[1]) == 3 and max(tree[1]) == 1
    assert hierarchy_from_weights(weights[order], [3, 2]) == tree  # deterministic
    conv = hierarchy_from_weights(weights[order][:, :, None, None], [3])
    assert conv == tree[:1]


@pytest.mark.parametrize("sizes", [[9], [3, 3], [], [0], 3])
def test_hierarchy_from_weights_bad_sizes(sizes):
    with pytest.raises(ValueError, match="sizes|k"):
        hierarchy_from_weights(torch.rand(9, 4), sizes)


def test_kmeans_keeps_every_cluster_non_empty():
    points = torch.tensor([[0.0, 0.0]] * 4 + [[1.0, 1.0]])  # duplicates: 3 clusters from 2 places
    assign = kmeans(points, 3)
    assert sorted(set(assign.tolist())) == [0, 1, 2]


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    nets = {name: torchvision.models.get_model(name, weights=None).eval()
            for name in ("resnet18", "vgg11_bn", "mobilenet_v2")}
    nets["vgg11_bn"].classifier = torch.nn.Identity()
    return nets


@pytest.mark.parametrize("arch, taps, size", [
    ("resnet18", ["layer3", "layer2"], 8),
    ("vgg11_bn", ["features.27", "features.20"], 8),
    ("mobilenet_v2", ["features.13", "features.6"], 8),
])
def test_build_torchvision(nets, arch, taps, size):
    built = build(nets[arch], "danet", 3, input_size=(64, 64), width=8, hierarchy=[[0, 0, 1], [0, 0]])
    assert built.taps == taps
    images = torch.rand(2, 3, 64, 64)
    built.train()
    out = built.forward_train(images, torch.tensor([0, 2]))
    assert out["logits"].shape == (2, 3) and out["logits_2"].shape == (2, 1)
    built.eval()
    assert built(images).shape == (2, 3)
    cams = built.cams(images)
    assert cams.shape == (2, size, size) and torch.isfinite(cams).all()


@pytest.mark.parametrize("hierarchy", [None, [[0, 0, 1]]])
def test_losses_decrease_on_repeated_batch(net, hierarchy):
    built = build(net, "danet", 3, feature_layer="layer2", input_size=SIZE, width=16, hierarchy=hierarchy)
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(6, 3, *SIZE, generator=gen), torch.arange(6) % 3)
    history = train(built, [batch], "danet", epochs=8, lr=0.01, progress=False, danet_alpha=0.2)
    losses = [h["loss"] for h in history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) < sum(losses[:2])


def test_fcam_learns_from_danet_maps(net):
    built = build(net, "danet", 5, feature_layer="layer3", input_size=(64, 64), width=8,
                  hierarchy=[[0, 0, 1, 1, 2]]).eval()
    data = SyntheticWSOL(4, size=64, seed=0)
    batch = {key: torch.stack([torch.as_tensor(data[i][key]) for i in range(4)])
             for key in ("image", "label", "raw")}
    fc = FCAM(built, built.target_layer, cam=built.cams, widths=(8, 8, 8, 8, 8), input_size=(64, 64))
    assert len(fc.fit([batch], epochs=1, progress=False)) == 1
    maps = fc.explain(batch["image"])
    assert maps.shape == (4, 64, 64) and torch.isfinite(maps).all()


def test_train_bad_options(net):
    built = build(net, "danet", 3, feature_layer="layer2", input_size=SIZE, width=8)
    batch = [(torch.rand(2, 3, *SIZE), torch.tensor([0, 1]))]
    with pytest.raises(ValueError, match="danet_alpha"):
        train(built, batch, "danet", progress=False, danet_alpha=-1.0)
    with pytest.raises(ValueError, match="danet_subset"):
        train(built, batch, "danet", progress=False, danet_subset=1)
    with pytest.raises(ValueError, match="images"):
        train(built, [(torch.rand(3, *SIZE), torch.tensor([0]))], "danet", progress=False)
