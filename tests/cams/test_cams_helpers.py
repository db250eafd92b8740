"""fcam.cams.layers, fcam.cams.maps and fcam.cams.transforms."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
import torchvision
from cams_toy import ToyNet
from torch import Tensor, nn
from torchvision.models.inception import InceptionOutputs

from fcam import cams
from fcam.cams import locate_target_layer, model_logits, resolve_layer

# ---------------------------------------------------------------------------- maps


def test_normalize_golden() -> None:
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[-2.0, -2.0], [0.0, 2.0]]])
    expected = torch.tensor([[[0.0, 0.5], [0.25, 1.0]], [[0.0, 0.0], [0.5, 1.0]]])
    torch.testing.assert_close(cams.normalize(maps), expected)
    torch.testing.assert_close(cams.normalize(maps[:, None]), expected[:, None])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normalize_constant_is_zero_not_nan(dtype: torch.dtype) -> None:
    out = cams.normalize(torch.full((2, 4, 4), 3.5, dtype=dtype))
    assert out.dtype == dtype
    assert torch.equal(out, torch.zeros_like(out))


def test_normalize_is_differentiable() -> None:
    maps = torch.rand(2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cams.normalize, (maps,))


def test_upsample_matches_interpolate() -> None:
    maps = torch.rand(2, 3, 4)
    expected = F.interpolate(maps[:, None], size=(9, 8), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(cams.upsample(maps, (9, 8)), expected)
    assert cams.upsample(maps[:, None], 6, mode="nearest").shape == (2, 1, 6, 6)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((torch.rand(2, 3, 3), 4, "cubic"), ValueError),
        ((torch.rand(3, 3), 4), ValueError),
        ((torch.rand(2, 2, 3, 3), 4), ValueError),
        ((torch.ones(2, 3, 3, dtype=torch.long), 4), TypeError),
        ((torch.rand(2, 3, 3), (0, 4)), ValueError),
    ],
)
def test_upsample_errors(args: tuple, error: type[Exception]) -> None:
    with pytest.raises(error, match="maps|mode|size"):
        cams.upsample(*args)


# ---------------------------------------------------------------------------- layers


def test_resolve_layer() -> None:
    model = torchvision.models.resnet18(weights=None)
    assert resolve_layer(model, "layer4.1.conv2") == ("layer4.1.conv2", model.layer4[1].conv2)
    assert resolve_layer(model, model.layer3)[0] == "layer3"
    with pytest.raises(ValueError, match="layer4"):
        resolve_layer(model, "layer5")
    with pytest.raises(ValueError, match="target_layer"):
        resolve_layer(model, "")


def test_locate_target_layer_restores_model() -> None:
    model = torchvision.models.resnet18(weights=None).train()
    assert locate_target_layer(model, torch.rand(1, 3, 64, 64)) == "layer4"
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    # GAP output (1x1) is skipped; ToyNet's last spatial module is the square
    assert locate_target_layer(ToyNet(), torch.rand(1, 2, 3, 3)) == "square"


def test_locate_without_spatial_layer() -> None:
    with pytest.raises(ValueError, match="target_layer"):
        locate_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.rand(1, 3, 2, 2))


def test_auto_target_layer_is_logged(caplog: pytest.LogCaptureFixture, toy: ToyNet, toy_input: Tensor) -> None:
    extractor = cams.GradCAM(toy)
    with caplog.at_level(logging.INFO, logger="fcam.cams"):
        out = extractor(toy_input, 0)
    assert extractor.target_name == "square"
    assert "'square'" in caplog.text
    assert out.shape == (1, 3, 3)


def test_model_logits_forms() -> None:
    logits = torch.rand(2, 5)
    assert model_logits(logits) is logits
    assert model_logits(InceptionOutputs(logits, torch.rand(2, 5))) is logits
    assert model_logits({"out": logits}) is logits
    assert model_logits({"only": logits}) is logits
    assert model_logits((logits, torch.rand(2, 7))) is logits
    assert model_logits([2, logits], output_fn=lambda out: out[1]) is logits

    class HFStyle(dict):
        @property
        def logits(self) -> Tensor:
            return logits

    assert model_logits(HFStyle(loss=torch.tensor(0.0))) is logits
    with pytest.raises(TypeError, match="output_fn"):
        model_logits({"a": logits, "b": logits})
    with pytest.raises(ValueError, match="output_fn"):
        model_logits(torch.rand(2, 5, 3))


# ---------------------------------------------------------------------------- transforms


def test_vit_reshape_infers_grid() -> None:
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # 1 class token + 2x2 patches
    grid = cams.vit_reshape_transform(tokens)
    assert grid.shape == (2, 3, 2, 2)
    # patch p = 1 + 2 * row + col, channel c
    assert torch.equal(grid[1, 2, 1, 0], tokens[1, 1 + 2 * 1 + 0, 2])
    assert cams.vit_reshape_transform(torch.rand(1, 36 + 4, 8), prefix_tokens=4).shape == (1, 8, 6, 6)
    assert cams.vit_reshape_transform(torch.rand(1, 1 + 6, 8), grid_size=(2, 3)).shape == (1, 8, 2, 3)


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [((1, 6, 4), {}), ((1, 5), {}), ((1, 5, 4), {"grid_size": (3, 3)}), ((1, 2, 4), {"prefix_tokens": 2})],
)
def test_vit_reshape_errors(shape: tuple[int, ...], kwargs: dict) -> None:
    with pytest.raises(ValueError, match="tokens|grid|prefix"):
        cams.vit_reshape_transform(torch.rand(*shape), **kwargs)


# ---------------------------------------------------------------------------- inputs


def test_check_images_names_the_argument() -> None:
    x = torch.zeros(2, 3, 4, 4)
    assert cams.check_images(x, channels=3) is x
    with pytest.raises(ValueError, match="`batch` has 3 channels but the model expects 1"):
        cams.check_images(x, channels=1, name="batch")
    with pytest.raises(TypeError, match="`batch`"):
        cams.check_images(x.int(), name="batch")


def test_blank_maps_are_reported_once(caplog: pytest.LogCaptureFixture, toy: ToyNet, toy_input: Tensor) -> None:
    # class 1 with only channel 0 present: CAM = relu(-A0) = 0 everywhere
    x = toy_input.clone()
    x[:, 1] = 0
    extractor = cams.CAM(toy, "features")
    with caplog.at_level(logging.WARNING, logger="fcam.cams"):
        assert float(extractor(x, 1).abs().sum()) == 0.0
        extractor(x, 1)
    assert caplog.text.count("all zero") == 1
    assert float(extractor.explain(x, 1).abs().sum()) == 0.0
