"""Failure handling of FCAM: damaged checkpoints, fixed-size and float64 classifiers, failed
epochs rolled back, and precise errors for small mistakes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from fcam import FCAM
from fcam.cams import GradCAM
from fcam.explainer import CHECKPOINT_NAME, NotFittedError

SIZE = 32


def tiny(classes: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes),
    ).eval()  # fmt: skip


def fixed_size(classes: int = 3) -> nn.Sequential:
    """Only accepts 32x32 inputs: a flatten + linear head on an 8x8 map."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 8 * 8, classes),
    ).eval()  # fmt: skip


def batches(n: int = 2, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 3, SIZE, SIZE, generator=g, dtype=dtype) for _ in range(n)]


def make(model: nn.Module, **kw: object) -> FCAM:
    kw.setdefault("widths", (8, 4))
    kw.setdefault("sigma_rgb", 60.0)
    return FCAM(model, kw.pop("target", "4"), cam=kw.pop("cam", "gradcam"), **kw)


# ----------------------------------------------------------------------------- checkpoints
def test_flipped_weight_bytes_are_detected(tmp_path: Path) -> None:
    model = tiny()
    fc = make(model, widths=(64, 64))  # weights are most of the file
    fc.fit(batches(), epochs=1, progress=False)
    fc.save(tmp_path / "fc.pt")
    data = bytearray((tmp_path / "fc.pt").read_bytes())
    start = len(data) // 3
    data[start : start + 200] = bytes(b ^ 0xFF for b in data[start : start + 200])
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad\.pt.*(damaged|not a readable)"):
        FCAM.load(tmp_path / "bad.pt", model)


def test_checkpoint_parts_and_digest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tiny()
    fc = make(model)
    fc.fit(batches(), epochs=1, progress=False)
    fc.save(tmp_path / "fc.pt")
    payload = torch.load(tmp_path / "fc.pt", weights_only=True)
    without = {k: v for k, v in payload.items() if k != "digest"}
    torch.save(without, tmp_path / "nodigest.pt")
    with caplog.at_level(logging.WARNING):
        FCAM.load(tmp_path / "nodigest.pt", model)
    assert "no digest" in caplog.text
    for key in ("config", "pyramid", "fingerprint", "decoder"):
        broken = {k: v for k, v in payload.items() if k != key}
        torch.save(broken, tmp_path / f"no-{key}.pt")
        with pytest.raises(ValueError, match=rf"no-{key}\.pt.*damaged.*'{key}' entry is missing"):
            FCAM.load(tmp_path / f"no-{key}.pt", model)
    torch.save(dict(payload, config=[1, 2]), tmp_path / "list.pt")
    with pytest.raises(ValueError, match="'config' entry is list"):
        FCAM.load(tmp_path / "list.pt", model)
    with pytest.raises(ValueError, match="is a folder"):
        fc.save(tmp_path)


# ----------------------------------------------------------------------------- probe size
def test_fixed_size_classifier_needs_and_accepts_input_size(tmp_path: Path) -> None:
    model = fixed_size()
    with pytest.raises(ValueError, match=r"pass input_size=\(H, W\)"):
        make(model, target="2")
    fc = make(model, target="2", input_size=SIZE)
    assert fc.config.input_size == (SIZE, SIZE)
    assert [s.name if s else None for s in fc.pyramid.skips] == ["1"]
    fc.fit(batches(), epochs=1, progress=False)
    assert fc.explain(batches(1)[0]).shape == (2, SIZE, SIZE)
    fc.save(tmp_path / "fc.pt")
    assert FCAM.load(tmp_path / "fc.pt", model).config.input_size == (SIZE, SIZE)


def test_declared_image_size_is_tried() -> None:
    model = fixed_size()
    model.image_size = SIZE  # as torchvision's VisionTransformer declares it
    assert make(model, target="2").pyramid.head.level == 2


def test_model_without_spatial_layer_is_refused() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    with pytest.raises(ValueError, match="spatial map"):
        FCAM(mlp, None, input_size=8)


# ----------------------------------------------------------------------------- dtypes
def test_float64_classifier_fits_and_explains() -> None:
    model = tiny().double()
    fc = make(model)
    assert next(fc.decoder.parameters()).dtype == torch.float64
    fc.fit(batches(dtype=torch.float64), epochs=1, progress=False)
    fc.fit(batches(), epochs=2, progress=False)  # float32 loader batches follow the model
    maps = fc.explain(batches(1, torch.float64)[0])
    assert maps.shape == (2, SIZE, SIZE) and torch.isfinite(maps).all()
    with pytest.raises(ValueError, match="`images` have dtype torch.float32 but the model has torch.float64"):
        fc.explain(batches(1)[0])
    fc32 = make(tiny())
    fc32.fit(batches(), epochs=1, progress=False)
    with pytest.raises(ValueError, match="`images` have dtype torch.float16"):
        fc32.explain(batches(1)[0].half())


# ----------------------------------------------------------------------------- failed epochs
def test_nan_in_a_later_epoch_rolls_back_to_the_last_checkpoint(tmp_path: Path) -> None:
    model = tiny()
    fc = make(model)
    good = batches()
    fc.fit(good, epochs=1, checkpoint_dir=tmp_path, progress=False)
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    bad = [*good, torch.full((2, 3, SIZE, SIZE), 1e30)]  # finite input, non-finite loss

    fc.loss.size.weight = 1.7e308  # makes the size term overflow on the next step
    with pytest.raises(FloatingPointError):
        fc.fit(bad, epochs=2, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert fc.fitted and len(fc.history) == 1
    for key, value in fc.decoder.state_dict().items():
        assert torch.equal(value, saved["decoder"][key]), key
    fc.save(tmp_path / "after.pt")
    after = torch.load(tmp_path / "after.pt", weights_only=True)
    for key, value in after["decoder"].items():
        assert torch.equal(value, saved["decoder"][key]), key


def test_interrupt_from_the_loader_rolls_back_and_first_epoch_stays_unfitted() -> None:
    fc = make(tiny())

    def interrupted() -> Iterator[torch.Tensor]:
        yield from batches(1)
        raise KeyboardInterrupt

    before = {k: v.clone() for k, v in fc.decoder.state_dict().items()}
    with pytest.raises(KeyboardInterrupt):
        fc.fit(interrupted(), epochs=1, progress=False)
    assert not fc.fitted and fc.history == []
    for key, value in fc.decoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(NotFittedError):
        fc.save("never.pt")


# ----------------------------------------------------------------------------- small ones
def test_small_mistakes_name_the_argument() -> None:
    fc = make(tiny())
    fc.fit(batches(), epochs=1, progress=False)
    x = batches(1)[0]
    with pytest.raises(TypeError, match="targets must hold integer class indices, got a bool"):
        fc.explain(x, targets=[True, False], return_cam=True)
    with GradCAM(tiny(), "4") as cam, pytest.raises(ValueError, match="`size`"):
        cam.explain(x, size=16.5)  # type: ignore[arg-type]


def test_resuming_a_finished_run_keeps_its_history(tmp_path: Path) -> None:
    fc = make(tiny())
    fc.fit(batches(), epochs=2, checkpoint_dir=tmp_path, progress=False)
    again = make(tiny())
    history = again.fit(batches(), epochs=2, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert again.fitted and len(history) == 2 and again.history == history == fc.history
