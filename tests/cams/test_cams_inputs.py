"""Bad input raises a clear error naming the argument and leaves the model unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from cams_toy import ToyNet
from torch import Tensor, nn

from fcam import cams


def assert_untouched(model: nn.Module, training: bool) -> None:
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(m.training == training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


BAD_IMAGES: list[tuple[Callable[[Tensor], Any], type[Exception], str]] = [
    (lambda x: x.tolist(), TypeError, "images"),
    (lambda x: x.long(), TypeError, "images"),
    (lambda x: x[0], ValueError, "images"),
    (lambda x: x[:0], ValueError, "images"),
    (lambda x: x[:, :1], ValueError, "channels"),
    (lambda x: x.index_put((torch.tensor([0]),), torch.tensor(float("nan"), dtype=x.dtype)), ValueError, "NaN"),
    (lambda x: x / 0.0, ValueError, "infinite"),
]


@pytest.mark.parametrize("name", ["gradcam", "scorecam", "cam"])
@pytest.mark.parametrize(("mutate", "error", "message"), BAD_IMAGES)
def test_bad_images(
    name: str, mutate: Callable[[Tensor], Any], error: type[Exception], message: str,
    toy: ToyNet, toy_input: Tensor,
) -> None:  # fmt: skip
    toy.train()
    with pytest.raises(error, match=message):
        cams.create(name, toy, "features")(mutate(toy_input))
    assert_untouched(toy, training=True)


@pytest.mark.parametrize(
    ("targets", "error", "message"),
    [
        (2, ValueError, r"out of range"),
        (-1, ValueError, r"out of range"),
        ([0, 1], ValueError, r"2 entries for a batch of 1"),
        (torch.tensor([0.0]), TypeError, "targets"),
        (torch.zeros(1, 1, dtype=torch.long), ValueError, "targets"),
        ("0", TypeError, "targets"),
        ([0.5], TypeError, "targets"),
        (True, TypeError, "targets"),
    ],
)
@pytest.mark.parametrize("name", ["gradcam", "scorecam", "cam", "smoothgradcampp"])
def test_bad_targets(name: str, targets: Any, error: type[Exception], message: str, toy: ToyNet,
                     toy_input: Tensor) -> None:  # fmt: skip
    toy.train()
    with pytest.raises(error, match=message):
        cams.create(name, toy, "features")(toy_input, targets)
    assert_untouched(toy, training=True)


def test_good_target_forms_agree(toy: ToyNet, toy_input: Tensor) -> None:
    x = toy_input.repeat(2, 1, 1, 1)
    extractor = cams.GradCAM(toy, "features")
    reference = extractor(x, [1, 1])
    for targets in (1, (1, 1), torch.tensor([1, 1]), torch.tensor(1), torch.tensor([1, 1], dtype=torch.int32)):
        torch.testing.assert_close(extractor(x, targets), reference)


def test_unknown_layer_name_lists_close_names(toy: ToyNet) -> None:
    with pytest.raises(ValueError, match=r"target_layer.*'features'"):
        cams.GradCAM(toy, "featurs")


def test_foreign_layer_and_bad_type(toy: ToyNet) -> None:
    with pytest.raises(ValueError, match="target_layer"):
        cams.GradCAM(toy, nn.Conv2d(2, 2, 1))
    with pytest.raises(TypeError, match="target_layer"):
        cams.GradCAM(toy, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["gradcam", "scorecam", "cam"])
def test_non_spatial_layer(name: str, toy: ToyNet, toy_input: Tensor) -> None:
    toy.train()
    with pytest.raises(ValueError, match=r"target_layer.*'fc'.*spatial"):
        cams.create(name, toy, "fc")(toy_input)
    assert_untouched(toy, training=True)


def test_layer_not_run(toy_input: Tensor) -> None:
    model = ToyNet().double()
    model.unused = nn.Conv2d(2, 2, 1)
    with pytest.raises(ValueError, match="was not run"):
        cams.GradCAM(model, "unused")(toy_input)


def test_unknown_method_lists_available(toy: ToyNet) -> None:
    with pytest.raises(ValueError, match=r"available: \['cam', 'gradcam'"):
        cams.create("gradcam3", toy)
    with pytest.raises(TypeError, match="name"):
        cams.create(None, toy)  # type: ignore[arg-type]


def test_create_accepts_spelling_variants(toy: ToyNet) -> None:
    assert isinstance(cams.create("Grad-CAM++".replace("+", "p"), toy, "features"), cams.GradCAMpp)
    assert isinstance(cams.create("smooth_gradcampp", toy, "features"), cams.SmoothGradCAMpp)


def test_available_and_classes() -> None:
    assert cams.available() == [
        "cam", "gradcam", "gradcampp", "smoothgradcampp", "xgradcam", "layercam", "scorecam", "sscam", "iscam",
        "tscam",
    ]  # fmt: skip
    for name in cams.available()[:9]:  # tscam needs a class token: test_tscam.py
        assert isinstance(cams.create(name, ToyNet(), "features"), cams._CAM)
    for cls in ("CAM", "GradCAM", "GradCAMpp", "SmoothGradCAMpp", "XGradCAM", "LayerCAM", "ScoreCAM", "SSCAM", "ISCAM"):
        assert getattr(cams, cls).__doc__


@pytest.mark.parametrize(
    ("options", "message"),
    [({"batch_size": 0}, "batch_size"), ({"num_samples": 0}, "num_samples"), ({"std": -1.0}, "std")],
)
def test_bad_score_options(options: dict[str, Any], message: str, toy: ToyNet) -> None:
    name = "sscam" if "std" in options or "num_samples" in options else "scorecam"
    with pytest.raises(ValueError, match=message):
        cams.create(name, toy, "features", **options)


def test_bad_callables(toy: ToyNet) -> None:
    with pytest.raises(TypeError, match="output_fn"):
        cams.GradCAM(toy, "features", output_fn=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reshape_transform"):
        cams.GradCAM(toy, "features", reshape_transform="vit")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model"):
        cams.GradCAM("resnet", "features")  # type: ignore[arg-type]


def test_cam_needs_linear_head() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="global-average-pool"):
        cams.CAM(model, "0")
    with pytest.raises(ValueError, match="not an nn.Linear"):
        cams.CAM(model, "0", fc_layer="1")


class DictNet(ToyNet):
    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        return {"aux": x.sum(), "logits": super().forward(x)}


class OddNet(ToyNet):
    def forward(self, x: Tensor) -> object:  # type: ignore[override]
        return {"a": super().forward(x), "b": super().forward(x)}


def test_dict_output_and_output_fn(toy_input: Tensor) -> None:
    expected = cams.GradCAM(ToyNet().double(), "features")(toy_input, 0)
    torch.testing.assert_close(cams.GradCAM(DictNet().double(), "features")(toy_input, 0), expected)
    with pytest.raises(TypeError, match="output_fn"):
        cams.GradCAM(OddNet().double(), "features")(toy_input, 0)
    got = cams.GradCAM(OddNet().double(), "features", output_fn=lambda out: out["b"])(toy_input, 0)
    torch.testing.assert_close(got, expected)
