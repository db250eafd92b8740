"""fcam.wsol.train: a few steps of every method on tiny data, finite maps, recipe and errors."""

from __future__ import annotations

import pytest
import torch
import torchvision

from fcam.wsol import ADL, available, build, make_optimizer, train

SIZE = (32, 32)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


def _batches(n=2, batch=4):
    gen = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(batch, 3, *SIZE, generator=gen),
             "label": torch.arange(batch) % 3} for _ in range(n)]


@pytest.mark.parametrize("method", available())
def test_every_method_trains_and_gives_finite_maps(net, method, device):
    built = build(net, method, 3, feature_layer="layer2", input_size=SIZE, width=16).to(device)
    before = [p.detach().clone() for p in built.heads.parameters()]
    history = train(built, _batches(), method, epochs=2, lr=0.01, device=device, progress=False,
                    seed=0)
    epochs = [1.0, 2.0, 3.0, 4.0] if method == "spol" else [1.0, 2.0]  # + SPOL's stage 2
    assert [h["epoch"] for h in history] == epochs
    assert all(h["steps"] == 2 and torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert any(not torch.equal(a, b) for a, b in zip(before, built.heads.parameters()))
    assert not built.training
    assert all(m.generator is None for m in built.modules() if isinstance(m, ADL))
    cams = built.cams(_batches(1)[0]["image"].to(device), [0, 1, 2, 0])
    # SPOL's map is at its shallowest stage (relu, stride 2); CSTN's at 4 x its 14 x 14 grid
    size = {"spol": 16, "cstn": 56}.get(method, 4)
    assert cams.shape == (4, size, size) and torch.isfinite(cams).all()
    assert cams.device.type == device.type


def test_training_is_seeded(net):
    runs = []
    for _ in range(2):
        built = build(net, "has", 3, feature_layer="layer2", input_size=SIZE, seed=0)
        train(built, _batches(1), "has", epochs=1, progress=False, seed=7)
        runs.append(built.heads[-1].weight.detach().clone())
    torch.testing.assert_close(runs[0], runs[1])


def test_optimizer_puts_heads_at_ten_times_lr(net):
    built = build(net, "acol", 3, feature_layer="layer2", input_size=SIZE, width=8)
    opt = make_optimizer(built, lr=0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.01, pytest.approx(0.1)]
    assert opt.defaults["weight_decay"] == 1e-4 and opt.defaults["nesterov"]
    assert sum(p.numel() for p in opt.param_groups[1]["params"]) == sum(
        p.numel() for p in built.heads.parameters())


def test_plain_classifier_with_input_methods_and_tuples(net):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3))
    batches = [(b["image"], b["label"]) for b in _batches()]
    history = train(model, batches, "cutmix", epochs=1, progress=False, max_steps=1)
    assert history[0]["steps"] == 1


@pytest.mark.parametrize(
    "method, kwargs, exc, word",
    [
        ("mixup", {}, ValueError, "method"),
        ("adl", {}, ValueError, "method"),  # a 'cam' model cannot train ADL
        ("has", {"has_drop_rate": 2.0}, ValueError, "has_drop_rate"),
        ("cutmix", {"cutmix_prob": -1.0}, ValueError, "cutmix_prob"),
        ("spg", {"spg_thresholds": ((0.7, 0.01),)}, ValueError, "spg_thresholds"),
        ("has", {"epochs": 0}, ValueError, "epochs"),
        ("has", {"lr": -1.0}, ValueError, "lr"),
        ("has", {"unknown": 1}, TypeError, "unknown"),
    ],
)
def test_train_bad_input(net, method, kwargs, exc, word):
    built = build(net, "cam", 3, feature_layer="layer2", input_size=SIZE)
    with pytest.raises(exc, match=word):
        train(built, _batches(1), method, progress=False, **kwargs)


def test_train_needs_labels_and_4d_images(net):
    built = build(net, "cam", 3, feature_layer="layer2", input_size=SIZE)
    with pytest.raises(ValueError, match="labels"):
        train(built, [torch.randn(2, 3, *SIZE)], "cam", progress=False)
    with pytest.raises(ValueError, match="images"):
        train(built, [(torch.randn(3, *SIZE), torch.tensor([0]))], "cam", progress=False)
