"""Classifier helpers of the demo: construction, cache keys, cached training, checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fcam.demo import cache as cache_mod
from fcam.demo import classifier as clf
from fcam.demo.classifier import (
    ClassifierConfig,
    build_classifier,
    load_classifier,
    save_classifier,
    train_classifier,
)

TINY = ClassifierConfig(image_size=64, n_train=8, epochs=1, batch_size=4)


def test_build_classifier_shapes_and_errors() -> None:
    model = build_classifier(7)
    assert model.fc.out_features == 7
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier(1)
    with pytest.raises(ValueError, match="arch"):
        build_classifier(3, "vgg11")


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FCAM_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("FCAM_CACHE_DIR")
    assert cache_mod.cache_dir() == tmp_path / "xdg" / "fcam"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_mod.cache_dir() == tmp_path / "home" / ".cache" / "fcam"


def test_config_key_is_order_free_and_sensitive_to_every_field() -> None:
    assert cache_mod.config_key({"a": 1, "b": 2}) == cache_mod.config_key({"b": 2, "a": 1})
    base = ClassifierConfig()
    keys = {base.key()}
    for f in dataclasses.fields(ClassifierConfig):
        value = getattr(base, f.name)
        changed = "resnet34" if f.name == "arch" else value * 2 if value else 1
        keys.add(dataclasses.replace(base, **{f.name: changed}).key())
    assert len(keys) == 1 + len(dataclasses.fields(ClassifierConfig))


def test_train_then_reload_from_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FCAM_CACHE_DIR", str(tmp_path))
    first = train_classifier(TINY, device="cpu", progress=False)
    files = list((tmp_path / "classifiers").glob("resnet18-*.pt"))
    assert [f.name for f in files] == [f"resnet18-{TINY.key()}.pt"]
    assert not list((tmp_path / "classifiers").glob(".*.tmp"))  # atomic write left no temp

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("cached weights should have been used")

    monkeypatch.setattr(clf, "_fit", no_training)
    second = train_classifier(TINY, device="cpu", progress=False)
    assert not second.training
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), k
    # A different config misses the cache and would train.
    with pytest.raises(AssertionError, match="cached"):
        train_classifier(dataclasses.replace(TINY, lr=1e-2), device="cpu", progress=False)


def test_training_is_deterministic_and_learns_something(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, n_train=20, epochs=2, batch_size=5)
    a = train_classifier(cfg, device="cpu", cache=False, progress=False)
    b = train_classifier(cfg, device="cpu", cache=False, progress=False)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
    torch.manual_seed(cfg.seed)
    init = build_classifier(5)  # the same initialisation train_classifier starts from
    assert not torch.equal(a.fc.weight, init.fc.weight)


def test_save_and_load_classifier_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_classifier(4).eval()
    path = save_classifier(model, tmp_path / "sub" / "clf.pt", arch="resnet18", image_size=96)
    loaded, meta = load_classifier(path)
    assert meta == {"arch": "resnet18", "num_classes": 4, "image_size": 96}
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), model(x))
    # A bare torchvision state dict works too (number of classes read from fc.weight).
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    loaded, meta = load_classifier(tmp_path / "bare.pt")
    assert meta["num_classes"] == 4 and meta["image_size"] is None


def test_load_classifier_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_classifier(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_classifier(tmp_path / "junk.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="fc.weight"):
        load_classifier(tmp_path / "other.pt")
    torch.save(build_classifier(3).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="resnet34"):
        load_classifier(tmp_path / "r18.pt", arch="resnet34")
    with pytest.raises(TypeError, match="ClassifierConfig"):
        train_classifier({"epochs": 1})  # type: ignore[arg-type]
