"""The demo's cached classifier and F-CAM for ``fcam app``: trained when missing (the
``--quick`` preset, shrunk here), found in the cache afterwards without retraining."""

from __future__ import annotations

from pathlib import Path

import pytest

from fcam.demo import DemoConfig
from fcam.demo import cached as cached_module
from fcam.demo.cached import cached_models, find_cached_models
from fcam.models import load_classifier


def test_trains_once_then_finds_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FCAM_CACHE_DIR", str(tmp_path / "cache"))
    tiny = {"n_train": 8, "n_test": 4, "classifier_epochs": 1, "fcam_epochs": 1,
            "fcam_train": 8, "fcam_batch_size": 4, "image_size": 64}

    class Tiny(DemoConfig):
        @classmethod
        def quick(cls, **overrides: object) -> DemoConfig:
            return DemoConfig(**{**tiny, **overrides})

    monkeypatch.setattr(cached_module, "DemoConfig", Tiny)
    assert find_cached_models() is None
    classifier, checkpoint = cached_models(progress=False)
    assert classifier.is_file() and checkpoint.is_file()
    assert classifier.parent.parent == checkpoint.parent.parent == tmp_path / "cache"
    model, spec = load_classifier(classifier)
    assert (spec.model, spec.num_classes, spec.input_size, spec.target_layer) == (
        "resnet18", 5, 64, "layer4")
    from fcam import FCAM

    assert FCAM.load(checkpoint, model).config.cam == "gradcampp"
    stamps = (classifier.stat().st_mtime_ns, checkpoint.stat().st_mtime_ns)
    assert find_cached_models() == (classifier, checkpoint)
    assert cached_models(progress=False) == (classifier, checkpoint)
    assert (classifier.stat().st_mtime_ns, checkpoint.stat().st_mtime_ns) == stamps
