"""fcam.evaluation.evaluate_localization on synthetic batches with maps whose scores are known
by hand, for any classifier output and without one; the interpolated-CAM map function."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from fcam.cams import cam_to_size, create
from fcam.data import SyntheticWSOL, wsol_collate
from fcam.evaluation import (
    LocalizationScores,
    cam_map_fn,
    evaluate_localization,
    fcam_map_fn,
)


def _evaluate(*args: object, **kwargs: object) -> LocalizationScores:
    # A coarse threshold grid keeps the test fast; the hand-checked values do not depend on it.
    return evaluate_localization(*args, progress=False, cam_curve_interval=0.01, **kwargs)


class _ConstantLogits(nn.Module):
    """Always predicts class 0 (a learnable parameter gives it a device)."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.arange(num_classes, 0, -1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1)


@pytest.fixture(scope="module")
def dataset() -> SyntheticWSOL:
    return SyntheticWSOL(10, size=48, seed=4, split="test")


def test_perfect_maps_score_100_and_top1_follows_the_classifier(dataset: SyntheticWSOL) -> None:
    loader = DataLoader(dataset, batch_size=4)
    masks = iter([b["mask"].float() for b in loader])
    scores = _evaluate(lambda x, y: next(masks), _ConstantLogits(), loader)
    assert scores.pxap == pytest.approx(100.0)
    assert scores.maxboxacc_v2 == pytest.approx(100.0)
    assert scores.maxboxacc == pytest.approx(100.0)
    # Class 0 is predicted for every image; labels cycle 0..4, so 2 of 10 are right.
    assert scores.classification_acc == pytest.approx(20.0)
    assert scores.top1_loc == pytest.approx(20.0)
    assert scores.num_images == 10


def test_constant_map_pxap_is_the_positive_fraction(dataset: SyntheticWSOL) -> None:
    loader = DataLoader(dataset, batch_size=3)
    positives = sum(int(dataset[i]["mask"].sum()) for i in range(len(dataset)))
    fraction = positives / (len(dataset) * 48 * 48)

    def constant(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.full(x.shape[:1] + x.shape[2:], 0.5)

    scores = _evaluate(constant, _ConstantLogits(), loader)
    assert scores.pxap == pytest.approx(100.0 * fraction, abs=1e-6)
    # A constant map yields one box, the whole frame, at every threshold below 0.5.
    whole = [dataset[i]["box"].tolist() for i in range(len(dataset))]
    hits = sum(((x1 + 1 - x0) * (y1 + 1 - y0)) / 48**2 >= 0.5 for x0, y0, x1, y1 in whole)
    assert scores.maxboxacc == pytest.approx(100.0 * hits / len(dataset))


def test_box_list_batches_match_padded_boxes(dataset: SyntheticWSOL) -> None:
    def noisy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(x.sum().abs() * 1000) % 2**31)
        return torch.rand(x.shape[0], *x.shape[2:], generator=g)

    padded = _evaluate(noisy, _ConstantLogits(), DataLoader(dataset, batch_size=5))

    def as_wsol(i: int) -> dict:
        item = dataset[i]
        return {"image": item["image"], "label": item["label"], "boxes": item["box"][None]}

    items = [as_wsol(i) for i in range(len(dataset))]
    listed = _evaluate(
        noisy, _ConstantLogits(), DataLoader(items, batch_size=5, collate_fn=wsol_collate)
    )
    assert listed.pxap is None and padded.pxap is not None
    assert listed.maxboxacc_v2 == padded.maxboxacc_v2
    assert listed.maxboxacc == padded.maxboxacc
    assert listed.top1_loc == padded.top1_loc


def test_bad_map_size_and_missing_ground_truth(dataset: SyntheticWSOL) -> None:
    loader = DataLoader(dataset, batch_size=5)
    with pytest.raises(ValueError, match="map_fn returned maps of size"):
        _evaluate(lambda x, y: torch.zeros(x.shape[0], 4, 4), _ConstantLogits(), loader)
    bare = [{"image": dataset[i]["image"], "label": dataset[i]["label"]} for i in range(2)]
    with pytest.raises(ValueError, match="neither boxes"):
        _evaluate(lambda x, y: torch.zeros(x.shape[0], 48, 48), _ConstantLogits(), DataLoader(bare))
    with pytest.raises(ValueError, match="no batch"):
        _evaluate(lambda x, y: x, _ConstantLogits(), [])


class _DictOutput(nn.Module):
    """A classifier whose output is a dict (as many non-torchvision models return)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _ConstantLogits()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"scores": self.inner(x), "embedding": x.mean((2, 3))}


def _replay(maps: list[torch.Tensor], channel: bool = False) -> object:
    """A map function returning the given maps in order (as (B, 1, H, W) with ``channel``)."""
    it = iter(maps)

    def map_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = next(it)
        return out[:, None] if channel else out

    return map_fn


def test_any_classifier_output_and_no_classifier(dataset: SyntheticWSOL) -> None:
    loader = DataLoader(dataset, batch_size=4)
    masks = [b["mask"].float() for b in loader]
    plain = _evaluate(_replay(masks), _ConstantLogits(), loader)
    via_dict = _evaluate(
        _replay(masks),
        _DictOutput(),
        loader,
        output_fn=lambda out: out["scores"],
    )
    assert via_dict.to_dict() == plain.to_dict()
    without = _evaluate(_replay(masks), None, loader)
    assert without.pxap == plain.pxap and without.maxboxacc_v2 == plain.maxboxacc_v2
    assert without.top1_loc is None and without.classification_acc is None
    # A (B, 1, H, W) map is accepted as (B, H, W).
    channel = _evaluate(_replay(masks, channel=True), None, loader)
    assert channel.pxap == plain.pxap


def test_bad_arguments_name_themselves(dataset: SyntheticWSOL) -> None:
    loader = DataLoader(dataset, batch_size=5)
    with pytest.raises(TypeError, match="map_fn"):
        _evaluate("not callable", _ConstantLogits(), loader)
    with pytest.raises(TypeError, match="model"):
        _evaluate(lambda x, y: x, "resnet", loader)
    with pytest.raises(TypeError, match="'image' and 'label'"):
        _evaluate(lambda x, y: x, None, [(torch.zeros(1, 3, 8, 8), torch.zeros(1))])
    with pytest.raises(TypeError, match="tensor"):
        _evaluate(lambda x, y: [0.5], None, loader)
    with pytest.raises(ValueError, match="cam_curve_interval"):
        evaluate_localization(lambda x, y: x, None, loader, cam_curve_interval=0.0)


def test_cam_map_fn_is_cam_to_size_of_the_raw_map(dataset: SyntheticWSOL) -> None:
    """The interpolated-CAM baseline: the GT-class raw CAM through fcam.cams.cam_to_size."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=4, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    images, labels = batch["image"], batch["label"]
    with create("gradcam", model, "1") as ext:
        maps = cam_map_fn(ext)(images, labels)
        expected = cam_to_size(ext(images, labels), images.shape[-2:])
    assert maps.shape == (3, 48, 48)
    torch.testing.assert_close(maps, expected)
    assert float(maps.amin()) >= 0.0 and float(maps.amax()) <= 1.0
    with pytest.raises(TypeError, match="extractor"):
        cam_map_fn(3)
    with pytest.raises(TypeError, match="explain"):
        fcam_map_fn(object())


def test_fcam_map_fn_calls_explain_without_grad() -> None:
    seen = {}

    class Explainer:
        def explain(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            seen["grad"] = torch.is_grad_enabled()
            seen["targets"] = targets
            return images[:, 0].sigmoid()

    images = torch.randn(2, 3, 4, 4)
    out = fcam_map_fn(Explainer())(images, torch.tensor([1, 2]))
    torch.testing.assert_close(out, images[:, 0].sigmoid())
    assert seen["grad"] is False and seen["targets"].tolist() == [1, 2]


def test_return_sweeps_gives_the_curves_behind_the_scores(dataset: SyntheticWSOL) -> None:
    """The Sweeps hold the evaluators' own results: the scores are read off their curves."""
    from fcam.metrics import BoxEvaluator, MaskEvaluator

    loader = DataLoader(dataset, batch_size=4)
    blur = torch.nn.AvgPool2d(7, 1, 3)

    def smooth(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return blur(x.mean(1, keepdim=True))[:, 0].sigmoid()

    plain = _evaluate(smooth, _ConstantLogits(), loader)
    sweeps = _evaluate(smooth, _ConstantLogits(), loader, return_sweeps=True)
    assert sweeps.scores == plain
    assert sweeps.box_v2 is not None and sweeps.box_v1 is not None and sweeps.masks is not None
    assert plain.maxboxacc_v2 == pytest.approx(
        sum(float(c.max()) for c in sweeps.box_v2.curves.values()) / 3)
    assert plain.maxboxacc == float(sweeps.box_v1.curves[50].max())
    # The same numbers as the metrics' evaluators fed directly.
    masks, boxes = MaskEvaluator(0.01), BoxEvaluator(2, cam_curve_interval=0.01)
    for batch in loader:
        maps = smooth(batch["image"], batch["label"])
        masks.update(maps, batch["mask"])
        boxes.update(maps, batch["box"][:, None])
    assert sweeps.masks.value == masks.compute().value == plain.pxap
    assert (sweeps.box_v2.image_iou == boxes.compute().image_iou).all()
    assert len(sweeps.box_v2.image_iou) == len(dataset)
