"""Center and FSL baselines, and F-CAM on top of a WSOL model (``cam=built.cams``)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from fcam import FCAM
from fcam.data import SyntheticWSOL
from fcam.wsol import build, center_baseline, few_shot_indices, fsl_baseline

SIZE = (64, 64)
WIDTHS = (8, 8, 8, 8, 8)


def test_center_baseline_formula():
    maps = center_baseline(3, (5, 8), sigma=0.3)
    ys = (torch.arange(5) + 0.5) / 5 - 0.5
    xs = (torch.arange(8) + 0.5) / 8 - 0.5
    gauss = torch.exp(-(ys[:, None] ** 2 + xs[None] ** 2) / (2 * 0.3**2))
    expected = (gauss - gauss.min()) / (gauss.max() - gauss.min())
    torch.testing.assert_close(maps, expected.expand(3, 5, 8))
    assert center_baseline(1, 6).shape == (1, 6, 6)
    torch.testing.assert_close(center_baseline(2, 7)[0], center_baseline(2, 7)[0].flip(0).flip(1))


@pytest.mark.parametrize("kwargs, word", [({"batch": 0}, "batch"), ({"sigma": 0.0}, "sigma"),
                                          ({"size": (0, 4)}, "size")])
def test_center_baseline_bad_input(kwargs, word):
    with pytest.raises(ValueError, match=word):
        center_baseline(**{"batch": 1, "size": 4, **kwargs})


def test_few_shot_indices_takes_first_k_per_class():
    data = [{"label": label} for label in [1, 0, 1, 1, 2, 0, 0, 2]]
    assert few_shot_indices(data, k=2) == [0, 1, 2, 4, 5, 7]


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    return build(torchvision.models.resnet18(weights=None), "acol", 5, feature_layer="layer3",
                 input_size=SIZE, width=16).eval()


def test_fcam_on_wsol_cams(built):
    data = SyntheticWSOL(4, size=SIZE[0], seed=0)
    batch = {key: torch.stack([torch.as_tensor(data[i][key]) for i in range(4)])
             for key in ("image", "label", "raw")}
    fc = FCAM(built, built.target_layer, cam=built.cams, widths=WIDTHS, input_size=SIZE)
    history = fc.fit([batch], epochs=1, progress=False)
    assert len(history) == 1
    maps = fc.explain(batch["image"])
    assert maps.shape == (4, *SIZE) and torch.isfinite(maps).all()


@pytest.mark.parametrize("finetune", [False, True])
def test_fsl_baseline_learns_masks(built, finetune):
    data = SyntheticWSOL(10, size=SIZE[0], seed=0)
    before = [p.detach().clone() for p in built.parameters()]
    fsl = fsl_baseline(built, data, built.target_layer, k=1, epochs=1, batch_size=5,
                       finetune_encoder=finetune, progress=False, widths=WIDTHS, input_size=SIZE)
    assert fsl.fitted
    maps = fsl.explain(torch.stack([data[i]["image"] for i in range(2)]))
    assert maps.shape == (2, *SIZE) and torch.isfinite(maps).all()
    assert all(torch.equal(a, b) for a, b in zip(before, built.parameters()))  # never modified
    assert (fsl.model is built) != finetune


def _half_masks_per_class(n: int = 8, side: int = 16) -> list[dict]:
    """The same image for both classes; class 0's mask is the left half, class 1's the right."""
    image = torch.rand(3, side, side, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(side, side, dtype=torch.long)
    mask[:, : side // 2] = 1
    return [{"image": image, "label": i % 2, "mask": mask if i % 2 == 0 else 1 - mask}
            for i in range(n)]


def _tiny_classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2),
    ).eval()  # fmt: skip


def test_fsl_baseline_with_the_class_head_learns_a_mask_per_class():
    # One image, two labels, two masks: only a decoder told the class can fit both.
    data = _half_masks_per_class()
    model = _tiny_classifier()
    common = dict(k=4, epochs=60, lr=0.05, batch_size=8, progress=False, widths=(8, 8),
                  input_size=(16, 16), lr_schedule="cosine")
    image = data[0]["image"][None].expand(2, -1, -1, -1)
    cls = fsl_baseline(model, data, "4", class_head=True, **common)
    maps = cls.explain(image, targets=[0, 1])
    left, right = maps[..., :8].mean((1, 2)), maps[..., 8:].mean((1, 2))
    assert left[0] > 0.8 and right[0] < 0.2 and right[1] > 0.8 and left[1] < 0.2
    agnostic = fsl_baseline(model, data, "4", **common).explain(image[:1])
    assert 0.3 < float(agnostic.mean()) < 0.7  # the same answer for both: about one half each


def test_fsl_baseline_bad_schedule():
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        fsl_baseline(_tiny_classifier(), _half_masks_per_class(2), "4", k=1, epochs=1,
                     progress=False, widths=(8, 8), input_size=(16, 16),
                     lr_schedule="step")
