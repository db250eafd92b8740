"""Faithfulness metrics on a hand-computable model: logit_0 = sum_p w_p x_p, logit_1 = 0, so
the class-0 probability is sigmoid(sum_p w_p x_p)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from fcam.metrics import average_drop, deletion_auc, increase_in_confidence, insertion_auc


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class WeightedSum(nn.Module):
    def __init__(self, weights):
        super().__init__()
        self.linear = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[0] = torch.tensor(weights)
        self.dropout = nn.Dropout(0.9)  # would break the golden values if eval() were missed

    def forward(self, x):
        return self.dropout(self.linear(x.flatten(1)))


def _auc(values):
    return (sum(values) - (values[0] + values[-1]) / 2) / (len(values) - 1)


@pytest.fixture
def setup():
    model = WeightedSum([4.0, 3.0, 2.0, 1.0]).double()
    images = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    maps = torch.tensor([[[0.9, 0.5], [0.3, 0.1]]], dtype=torch.float64)  # ranks = weights
    return model, images, maps


def test_deletion_golden(setup):
    model, images, maps = setup
    auc, curves = deletion_auc(model, images, maps, targets=0, steps=4, return_curves=True)
    expected = [sigmoid(s) for s in (10, 6, 3, 1, 0)]
    torch.testing.assert_close(curves[0], torch.tensor(expected, dtype=torch.float64))
    assert auc.item() == pytest.approx(_auc(expected), abs=1e-12)


def test_insertion_golden_zero_baseline(setup):
    model, images, maps = setup
    auc = insertion_auc(model, images, maps, targets=0, steps=4, baseline="zeros")
    assert auc.item() == pytest.approx(_auc([sigmoid(s) for s in (0, 4, 7, 9, 10)]), abs=1e-12)


def test_deletion_constant_baseline_and_other_target(setup):
    model, images, maps = setup
    # Deleted pixels become 0.5: sums 10, 8, 6.5, 5.5, 5; class 1 has probability 1 - sigmoid.
    auc = deletion_auc(model, images, maps, targets=[1], steps=2, baseline=0.5)
    assert auc.item() == pytest.approx(_auc([1 - sigmoid(s) for s in (10, 6.5, 5)]), abs=1e-12)


def test_blur_baseline_starts_from_the_blurred_image(setup):
    model, _, maps = setup
    images = torch.arange(4, dtype=torch.float64).reshape(1, 1, 2, 2)
    _, curves = insertion_auc(model, images, maps, targets=0, steps=4, return_curves=True)
    blurred = gaussian_blur(images, [3, 3], [5.0, 5.0])  # RISE's 11 x 11, shrunk to fit 2 x 2
    assert not torch.equal(blurred, images)
    start = sigmoid(
        float((blurred.flatten() * torch.tensor([4.0, 3, 2, 1], dtype=torch.float64)).sum())
    )
    end = sigmoid(
        float((images.flatten() * torch.tensor([4.0, 3, 2, 1], dtype=torch.float64)).sum())
    )
    assert curves[0, 0].item() == pytest.approx(start) and curves[0, -1].item() == pytest.approx(
        end
    )


def test_better_map_has_lower_deletion_and_higher_insertion(setup):
    model, images, good = setup
    bad = 1.0 - good
    assert deletion_auc(model, images, good, steps=4) < deletion_auc(model, images, bad, steps=4)
    assert insertion_auc(model, images, good, steps=4, baseline="zeros") > insertion_auc(
        model, images, bad, steps=4, baseline="zeros"
    )


def test_batched_equals_per_image_and_low_res_maps_are_resized():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    images = torch.randn(3, 3, 8, 8)
    maps = torch.rand(3, 4, 4)
    batched = deletion_auc(model, images, maps, steps=8)
    single = torch.cat(
        [deletion_auc(model, images[i : i + 1], maps[i : i + 1], steps=8) for i in range(3)]
    )
    torch.testing.assert_close(batched, single)
    assert batched.shape == (3,) and batched.device == images.device


def test_average_drop_and_increase_golden():
    model = WeightedSum([4.0, 3.0, 2.0, -1.0]).double()
    images = torch.ones(2, 1, 2, 2, dtype=torch.float64)
    maps = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    y = sigmoid(8)
    # Image 0 keeps the weights 4 and 3; image 1 drops only the negative pixel.
    o0, o1 = sigmoid(7), sigmoid(9)
    assert o0 < y < o1
    drops = average_drop(model, images, maps, targets=0, reduction="none")
    torch.testing.assert_close(drops, torch.tensor([100 * (y - o0) / y, 0.0], dtype=torch.float64))
    assert average_drop(model, images, maps, targets=0) == pytest.approx(50 * (y - o0) / y)
    increases = increase_in_confidence(model, images, maps, targets=0, reduction="none")
    torch.testing.assert_close(increases, torch.tensor([0.0, 100.0], dtype=torch.float64))
    assert increase_in_confidence(model, images, maps, targets=0) == 50.0


def test_model_mode_and_grads_untouched(setup):
    model, images, maps = setup
    model.train()
    model.linear.eval()  # a mixed state must come back as it was
    deletion_auc(model, images, maps, steps=2)
    average_drop(model, images, maps)
    assert model.training and model.dropout.training and not model.linear.training
    assert all(p.grad is None for p in model.parameters())


def test_default_target_is_the_prediction(setup):
    model, images, maps = setup
    assert deletion_auc(model, images, maps, steps=4).item() == pytest.approx(
        deletion_auc(model, images, maps, targets=0, steps=4).item()
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"baseline": "noise"}, ValueError, "baseline"),
        ({"targets": [0, 1]}, ValueError, "targets"),
        ({"targets": 5}, ValueError, "out of range"),
    ],
)
def test_bad_arguments(setup, kwargs, error, match):
    model, images, maps = setup
    with pytest.raises(error, match=match):
        deletion_auc(model, images, maps, **kwargs)


def test_bad_maps(setup):
    model, images, _ = setup
    with pytest.raises(ValueError, match="maps must have shape"):
        average_drop(model, images, torch.rand(2, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        insertion_auc(model, images, torch.full((1, 2, 2), float("nan")))
    with pytest.raises(TypeError, match="maps must be"):
        deletion_auc(model, images, [[0.0]])
    with pytest.raises(ValueError, match="reduction"):
        average_drop(model, images, torch.rand(1, 2, 2), reduction="sum")
