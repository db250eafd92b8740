"""fcam.models: specs, building by torchvision name or import path, weights files, checkpoints,
fcam classifier files (and the demo's older ones), and the errors for each mistake."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from fcam.models import (
    ClassifierSpec,
    build_model,
    infer_num_classes,
    load_classifier,
    load_model,
    read_classifier_file,
    read_state_dict,
    save_classifier,
)


def tiny_cnn(num_classes: int = 2) -> nn.Module:
    """Built through the import path ``test_model_files:tiny_cnn``."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, num_classes),
    )


def not_a_module(num_classes: int = 2) -> str:
    return "nope"


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=3).eval()


def _same_outputs(a: nn.Module, b: nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_spec_validation_and_round_trip() -> None:
    spec = ClassifierSpec("resnet18", num_classes=3, target_layer="layer4", input_size=64,
                          mean=[0.5, 0.5, 0.5], std=(0.25, 0.25, 0.25))
    assert spec.mean == (0.5, 0.5, 0.5) and spec.size == 64
    assert ClassifierSpec.from_dict(spec.to_dict()) == spec
    assert ClassifierSpec("x.y:z").is_import_path and ClassifierSpec("resnet18").size == 224
    with pytest.raises(ValueError, match="num_classes"):
        ClassifierSpec("resnet18", num_classes=0)
    with pytest.raises(ValueError, match="mean and std"):
        ClassifierSpec("resnet18", mean=(0.5, 0.5), std=(0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="std"):
        ClassifierSpec("resnet18", std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="package.module:callable"):
        ClassifierSpec("pkg:mod:fn")
    with pytest.raises(TypeError, match="model"):
        ClassifierSpec("")
    with pytest.raises(ValueError, match="unknown keys"):
        ClassifierSpec.from_dict({"model": "resnet18", "arch": "x"})


def test_build_by_torchvision_name_and_import_path() -> None:
    assert build_model(ClassifierSpec("resnet18", num_classes=4)).fc.out_features == 4
    assert build_model(ClassifierSpec("mobilenet_v3_small", num_classes=2)).classifier[-1].out_features == 2
    net = build_model(ClassifierSpec("test_model_files:tiny_cnn", num_classes=5))
    assert net[-1].out_features == 5
    assert build_model(ClassifierSpec("test_model_files:tiny_cnn"))[-1].out_features == 2
    tv = build_model(ClassifierSpec("torchvision.models:resnet18", num_classes=3))
    assert tv.fc.out_features == 3
    with pytest.raises(ValueError, match="did you mean resnet50"):
        build_model(ClassifierSpec("resnet5"))
    with pytest.raises(ValueError, match="cannot import module"):
        build_model(ClassifierSpec("no_such_package_xyz.mod:fn"))
    with pytest.raises(ValueError, match="no attribute"):
        build_model(ClassifierSpec("test_model_files:missing"))
    with pytest.raises(TypeError, match="not an nn.Module"):
        build_model(ClassifierSpec("test_model_files:not_a_module"))
    with pytest.raises(TypeError, match="ClassifierSpec"):
        build_model("resnet18")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [None, "state_dict", "model_state_dict", "model"])
def test_load_model_from_weights_and_checkpoints(resnet: nn.Module, tmp_path: Path, key: str | None) -> None:
    state = resnet.state_dict()
    if key is None:
        payload: object = state
    else:  # a training checkpoint, saved from a DDP-wrapped model
        payload = {key: {f"module.{k}": v for k, v in state.items()}, "epoch": 7, "lr": 0.1}
    torch.save(payload, tmp_path / "w.pt")
    model, spec = load_model(ClassifierSpec("resnet18"), tmp_path / "w.pt", device="cpu")
    assert spec.num_classes == 3  # read from fc.weight
    assert not model.training
    _same_outputs(model, resnet)


def test_infer_num_classes_and_read_state_dict_errors(tmp_path: Path) -> None:
    assert infer_num_classes(tiny_cnn(6).state_dict()) == 6
    assert infer_num_classes({"conv.weight": torch.zeros(2, 3, 3, 3)}) is None
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        read_state_dict(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk")
    with pytest.raises(ValueError, match="cannot read weights file"):
        read_state_dict(tmp_path / "junk.pt")
    torch.save({"optimizer": {"lr": 0.1}, "epoch": 3}, tmp_path / "opt.pt")
    with pytest.raises(ValueError, match="holds no state dict"):
        read_state_dict(tmp_path / "opt.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        read_state_dict(tmp_path / "list.pt")


def test_mismatching_weights_are_one_clear_error(resnet: nn.Module, tmp_path: Path) -> None:
    torch.save(resnet.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="weights do not fit ResNet") as info:
        load_model(ClassifierSpec("resnet34"), tmp_path / "r18.pt")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="size mismatch"):
        load_model(ClassifierSpec("resnet18", num_classes=10), tmp_path / "r18.pt")


def test_save_and_load_classifier_round_trip(resnet: nn.Module, tmp_path: Path) -> None:
    spec = ClassifierSpec("resnet18", 3, "layer4", 48, (0.5,) * 3, (0.2,) * 3)
    old = os.umask(0o022)
    try:
        path = save_classifier(resnet, spec, tmp_path / "sub" / "clf.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by others under umask 022
    assert [p.name for p in path.parent.iterdir()] == ["clf.pt"]  # no temporary left over
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "fcam.classifier"
    model, loaded = load_classifier(path, device="cpu")
    assert loaded == spec
    _same_outputs(model, resnet)
    # An import-path model round-trips too.
    net = tiny_cnn(3)
    save_classifier(net, ClassifierSpec("test_model_files:tiny_cnn", 3), tmp_path / "t.pt")
    loaded_net, _ = load_classifier(tmp_path / "t.pt", device="cpu")
    _same_outputs(loaded_net, net)
    with pytest.raises(TypeError, match="ClassifierSpec"):
        save_classifier(net, {"model": "x"}, tmp_path / "x.pt")  # type: ignore[arg-type]


def test_demo_classifier_files_of_earlier_versions_load(resnet: nn.Module, tmp_path: Path) -> None:
    legacy = {"state_dict": resnet.state_dict(), "arch": "resnet18", "num_classes": 3,
              "image_size": 96}
    torch.save(legacy, tmp_path / "classifier.pt")
    model, spec = load_classifier(tmp_path / "classifier.pt", device="cpu")
    assert spec == ClassifierSpec("resnet18", 3, "layer4", 96)
    _same_outputs(model, resnet)


def test_plain_weights_are_not_a_classifier_file(resnet: nn.Module, tmp_path: Path) -> None:
    torch.save(resnet.state_dict(), tmp_path / "bare.pt")
    spec, state = read_classifier_file(tmp_path / "bare.pt")
    assert spec is None and "fc.weight" in state
    with pytest.raises(ValueError, match="--model NAME --weights"):
        load_classifier(tmp_path / "bare.pt")
    with pytest.raises(FileNotFoundError, match="classifier checkpoint not found"):
        load_classifier(tmp_path / "missing.pt")
