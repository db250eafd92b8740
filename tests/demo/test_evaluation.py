"""evaluate_localization on synthetic batches with maps whose scores are known by hand."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from fcam.data import SyntheticWSOL, wsol_collate
from fcam.demo.evaluation import LocalizationScores, evaluate_localization
from fcam.demo.report import format_table, gain_lines, results_json


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


def _scores(pxap: float | None, v2: float) -> LocalizationScores:
    return LocalizationScores(
        pxap=pxap,
        maxboxacc_v2=v2,
        maxboxacc=50.0,
        top1_loc=25.04,
        classification_acc=90.0,
        num_images=3,
    )


def test_report_table_markdown_json_and_gains() -> None:
    rows = {"CAM": _scores(41.25, 30.0), "CAM + F-CAM": _scores(70.0, 61.5)}
    assert format_table(rows) == (
        "method       PxAP  MaxBoxAccV2  MaxBoxAcc  Top-1 Loc\n"
        "----------------------------------------------------\n"
        "CAM          41.2         30.0       50.0       25.0\n"
        "CAM + F-CAM  70.0         61.5       50.0       25.0"
    )
    assert format_table(rows, markdown=True).splitlines() == [
        "| method | PxAP | MaxBoxAccV2 | MaxBoxAcc | Top-1 Loc |",
        "|---|---:|---:|---:|---:|",
        "| CAM | 41.2 | 30.0 | 50.0 | 25.0 |",
        "| CAM + F-CAM | 70.0 | 61.5 | 50.0 | 25.0 |",
    ]
    assert gain_lines([("CAM", rows["CAM"], rows["CAM + F-CAM"])]) == [
        "F-CAM gain over interpolated CAM: PxAP +28.8, MaxBoxAccV2 +31.5 points"
    ]
    assert gain_lines([("X", _scores(None, 10.0), _scores(None, 12.0))]) == [
        "F-CAM gain over interpolated X: MaxBoxAccV2 +2.0 points"
    ]
    payload = json.loads(results_json(rows, {"device": "cpu"}))
    assert payload["device"] == "cpu"
    assert payload["results"]["CAM + F-CAM"]["pxap"] == 70.0
    assert format_table({"m": _scores(None, 1.0)}).splitlines()[-1].split()[1] == "n/a"
