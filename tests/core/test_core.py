"""fcam.core: state restore, probe, targets, validation, atomic writes, references."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fcam.core import (
    IMAGENET_MEAN,
    ModelState,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    check_bool,
    check_int,
    check_number,
    check_stats,
    frozen,
    import_reference,
    parse_targets,
    probe_model,
    reference_of,
)


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )  # fmt: skip


# ----------------------------------------------------------------------------- state
def test_frozen_restores_modes_and_flags_even_on_error() -> None:
    model = net().train()
    model[1].eval()
    model[0].weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="boom"), frozen(model):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    state = ModelState(model)
    model.eval().requires_grad_(True)
    state.restore()
    assert [p.requires_grad for p in model.parameters()] == flags


# ----------------------------------------------------------------------------- probe
def test_probe_records_last_call_shapes_in_order_and_cleans_up() -> None:
    model = net().train()
    probe = probe_model(model, size=(12, 10))
    names = [e.name for e in probe.events]
    assert names[:5] == ["0", "1", "2", "3", "4"] and names[-1] == ""
    assert tuple(probe.event("3").shape) == (1, 8, 6, 5)
    assert probe.last_spatial() == "4"
    assert probe.num_classes() == 5
    assert model.training and not model[0]._forward_hooks
    with pytest.raises(ValueError, match="probe input of shape"):
        probe_model(model, size=(12, 10), in_channels=2)


# ----------------------------------------------------------------------------- targets
class CategoryTarget:
    """pytorch-grad-cam's ClassifierOutputTarget shape: a callable with `.category`."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[..., self.category]


@pytest.mark.parametrize(
    "targets",
    [
        [1, 3],
        (1, 3),
        torch.tensor([1, 3]),
        np.array([1, 3]),
        np.array([1, 3], dtype=np.int32),
        [np.int64(1), np.int64(3)],
        [CategoryTarget(1), CategoryTarget(3)],
    ],
)
def test_parse_targets_forms(targets: object) -> None:
    assert parse_targets(targets, 2, 5).tolist() == [1, 3]


def test_parse_targets_scalars_and_errors() -> None:
    assert parse_targets(None, 3) is None
    assert parse_targets(2, 3).tolist() == [2, 2, 2]
    assert parse_targets(np.int64(2), 2).tolist() == [2, 2]
    assert parse_targets(torch.tensor(4), 2).tolist() == [4, 4]
    assert parse_targets(CategoryTarget(4), 2).tolist() == [4, 4]
    with pytest.raises(TypeError, match="targets"):
        parse_targets(np.array([0.5]), 1)
    with pytest.raises(TypeError, match="bool"):
        parse_targets(True, 1)
    with pytest.raises(TypeError, match="category"):
        parse_targets([object()], 1)
    with pytest.raises(ValueError, match=r"labels \[5\] out of range for 5 classes"):
        parse_targets([5], 1, 5, name="labels")
    with pytest.raises(ValueError, match="2 entries for a batch of 3"):
        parse_targets([0, 1], 3)


def test_parse_targets_with_pytorch_grad_cam_target() -> None:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    assert parse_targets([ClassifierOutputTarget(2), ClassifierOutputTarget(0)], 2, 3).tolist() == [2, 0]


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1", None, True])
def test_check_number_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="lr must be a finite number"):
        check_number(bad, "lr")


def test_check_number_ranges_and_int() -> None:
    assert check_number(0, "w", non_negative=True) == 0.0
    with pytest.raises(ValueError, match="positive"):
        check_number(0, "w", positive=True)
    with pytest.raises(ValueError, match="non-negative"):
        check_number(-1, "w", non_negative=True)
    with pytest.raises(ValueError, match="<= 1"):
        check_number(2, "scale", maximum=1)
    assert check_bool(False, "flag") is False
    for bad in (0, 1, "yes", None):
        with pytest.raises(TypeError, match="flag must be a bool"):
            check_bool(bad, "flag")
    assert check_int(0, "n", 0) == 0
    for bad in (0, 1.0, True, "3"):
        with pytest.raises(ValueError, match="n must be a positive int"):
            check_int(bad, "n")
    assert check_stats(IMAGENET_MEAN, (1, 1, 1), 3) == (IMAGENET_MEAN, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        check_stats((0.5,), (0.5,), 3)
    with pytest.raises(ValueError, match="std"):
        check_stats((0.5,), (0.0,), 1)


# ----------------------------------------------------------------------------- io
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        written = [
            atomic_write_bytes(tmp_path / "sub" / "a.bin", b"x"),
            atomic_write_text(tmp_path / "b.txt", "é"),
            atomic_torch_save({"t": torch.ones(2)}, tmp_path / "c.pt"),
        ]
    finally:
        os.umask(old)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "é"
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["t"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt", "c.pt", "sub"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "keep.pt"
    target.write_bytes(b"old")

    class Unpicklable:
        def __reduce__(self) -> tuple:
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save(Unpicklable(), target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pt"]


# ----------------------------------------------------------------------------- references
def module_level(images: torch.Tensor, targets: object) -> torch.Tensor:
    return images.mean(1)


def test_references_round_trip() -> None:
    ref = reference_of(module_level)
    assert ref == f"{__name__}:module_level"
    assert import_reference(ref) is module_level
    assert reference_of(lambda x: x) is None
    assert reference_of(object()) is None
    for bad in ("nocolon", "a:b:c", "no_such_module_xyz:f", "math:no_such_name"):
        with pytest.raises(ValueError):
            import_reference(bad)


def test_read_torch_file_says_what_the_file_is(tmp_path: Path) -> None:
    from PIL import Image

    from fcam.core import read_torch_file

    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    with pytest.raises(ValueError, match=r"not a PyTorch file .*starts with b'\\x89PNG'"):
        read_torch_file(tmp_path / "img.png")

    torch.save({"obj": CategoryTarget(1)}, tmp_path / "pickled.pt")  # a module-level class
    with pytest.raises(ValueError, match="safe loading .* refuses"):
        read_torch_file(tmp_path / "pickled.pt")
    data = (tmp_path / "pickled.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged or unreadable"):
        read_torch_file(tmp_path / "cut.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(read_torch_file(tmp_path / "ok.pt")["w"], torch.ones(2))
