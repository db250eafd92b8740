"""benchmarks/real_photos.py without pretrained weights: the fold split, the cross-fitting (no
photograph is scored by a model that trained on it), the cache, and the scoring."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fcam.data import MaskFolder, SyntheticWSOL
from fcam.demo import build_classifier
from fcam.explainer import FCAMConfig, SeedOptions
from fcam.metrics import maxboxacc, pxap

SIZE = 64
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_photos.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    # The script imports its sibling modules, as it does when run from the command line.
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("real_photos", SCRIPT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Six generated photographs with masks, through MaskFolder (label 1)."""
    root = tmp_path_factory.mktemp("photos")
    (root / "rgb").mkdir()
    (root / "figure_ground").mkdir()
    for i, item in enumerate(SyntheticWSOL(6, size=SIZE, seed=5, split="test")):
        Image.fromarray(item["raw"].permute(1, 2, 0).numpy()).save(root / "rgb" / f"h{i}.jpg")
        mask = item["mask"].numpy().astype(np.uint8) * 255
        Image.fromarray(mask).save(root / "figure_ground" / f"h{i}.png")
    folder = MaskFolder(root, size=SIZE, label=1)
    return [folder[i] for i in range(len(folder))]


def test_fold_split_scores_every_photograph_once(bench: Any) -> None:
    for count, folds in ((6, 2), (7, 2), (9, 3)):
        split = bench.fold_split(count, folds)
        tested = sorted(i for _, test in split for i in test)
        assert tested == list(range(count))
        for train, test in split:
            assert not set(train) & set(test) and sorted(train + test) == list(range(count))
    with pytest.raises(ValueError, match="at least"):
        bench.fold_split(1)


def test_scoring_and_gap_share(bench: Any, items: list[dict[str, Any]]) -> None:
    masks = torch.stack([item["mask"] for item in items])
    boxes = torch.stack([item["box"] for item in items])
    perfect = bench.score(masks.float(), masks, boxes)
    assert perfect == {"pxap": pytest.approx(100.0), "maxboxacc_v2": 100.0, "maxboxacc": 100.0}
    noisy = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
    scores = bench.score(noisy, masks, boxes)
    assert scores["pxap"] == pxap(noisy, masks)
    assert scores["maxboxacc_v2"] == maxboxacc(noisy, [b[None].numpy() for b in boxes])
    assert bench.gap_share(50.0, 60.0, 70.0) == pytest.approx(0.5)
    assert bench.gap_share(50.0, 60.0, 50.0) is None
    table = {"gradcampp": {"pxap": 50.0, "maxboxacc_v2": 60.0, "maxboxacc": 70.0},
             "fcam": {"pxap": 65.0, "maxboxacc_v2": 70.0, "maxboxacc": 70.0},
             "ceiling_class": {"pxap": 70.0, "maxboxacc_v2": 80.0, "maxboxacc": 90.0},
             "ceiling_agnostic": {"pxap": 80.0, "maxboxacc_v2": 70.0, "maxboxacc": 80.0}}
    summary = bench.summarise(table)
    assert summary["ceiling"] == "ceiling_agnostic"  # the stronger by PxAP
    assert summary["gap_share"] == {"pxap": pytest.approx(0.5), "maxboxacc_v2": pytest.approx(1.0),
                                    "maxboxacc": pytest.approx(0.0)}


def test_run_folds_cross_fits_and_resumes(bench: Any, items: list[dict[str, Any]], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = build_classifier(5).eval().requires_grad_(False)
    seen: list[tuple[str, list[int]]] = []
    ids = {id(item["raw"]): i for i, item in enumerate(items)}
    real_augmented, real_fsl = bench.Augmented, bench.fsl_baseline

    def augmented(chosen: list[dict[str, Any]], *args: Any) -> Any:
        seen.append(("fcam", sorted(ids[id(item["raw"])] for item in chosen)))
        return real_augmented(chosen, *args)

    def fsl(model_: Any, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(("fsl", sorted(ids[id(item["raw"])] for item in dataset.items)))
        return real_fsl(model_, dataset, *args, **kwargs)

    monkeypatch.setattr(bench, "Augmented", augmented)
    monkeypatch.setattr(bench, "fsl_baseline", fsl)
    options = {"label": 1, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
               "epochs": 1, "ceiling": {"epochs": 1, "batch_size": 2}, "k": 1, "batch_size": 2}
    result = bench.run_folds(model, "layer4", items, cache=tmp_path, **options)
    assert set(result["maps"]) == {"fcam", "ceiling_class", "fewshot", "ceiling_agnostic"}
    # Every fit saw only the other fold: fold 1 trains on odd positions, fold 2 on even ones.
    assert seen == [("fcam", [1, 3, 5]), ("fcam", [0, 2, 4])] + [
        ("fsl", [1, 3, 5]), ("fsl", [0, 2, 4])] * 3
    for maps in result["maps"].values():
        assert maps.shape == (6, SIZE, SIZE) and 0 <= float(maps.min()) <= float(maps.max()) <= 1
        assert all(float(m.max()) > 0 for m in maps)  # every position was filled
    assert all(len(v) == 2 for v in result["fit_s"].values())
    # A rerun reads the saved maps back instead of fitting again.
    seen.clear()
    again = bench.run_folds(model, "layer4", items, cache=tmp_path, **options)
    assert not seen
    for name, maps in result["maps"].items():
        assert torch.equal(again["maps"][name], maps)


def test_augmented_items_are_crops_of_the_photograph(bench: Any, items: list[dict[str, Any]]) -> None:
    aug = bench.Augmented(items[:2], (0.5,) * 3, (0.5,) * 3)
    torch.manual_seed(0)
    item = aug[0]
    assert set(item) == {"image", "raw", "label"} and "mask" not in item
    assert item["raw"].shape == (3, SIZE, SIZE) and item["raw"].dtype == torch.uint8
    assert torch.allclose(item["image"], (item["raw"].float() / 255 - 0.5) / 0.5)


def test_fold_scores_weigh_each_fold_by_its_size(bench: Any, items: list[dict[str, Any]]) -> None:
    masks = torch.stack([item["mask"] for item in items])
    boxes = torch.stack([item["box"] for item in items])
    maps = torch.rand(masks.shape, generator=torch.Generator().manual_seed(1))
    maps[1::2] *= 0.01  # the second fold's model gives low values: pooled PxAP suffers, not its own
    split = bench.fold_split(len(items))
    by_fold = bench.fold_scores(maps, masks, boxes, split, box_interval=0.01)
    expected = sum(pxap(maps[test], masks[test]) * len(test) for _, test in split) / len(items)
    assert by_fold["pxap"] == pytest.approx(expected)


def test_fcam_options_reach_the_fit(bench: Any, items: list[dict[str, Any]], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert bench.parse_options(["colour_bins=0", "crf_weight=1e-9", "colour_mode=filter"]) == {
        "colour_bins": 0, "crf_weight": 1e-9, "colour_mode": "filter"}
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        bench.parse_options(["crf_weight"])
    built: list[Any] = []
    real_fcam = bench.FCAM

    def fcam(*args: Any, **kwargs: Any) -> Any:
        built.append(real_fcam(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(bench, "FCAM", fcam)
    torch.manual_seed(0)
    model = build_classifier(5).eval().requires_grad_(False)
    options = {"label": 1, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
               "epochs": 1, "batch_size": 2, "methods": ["fcam"], "cache": tmp_path}
    bench.run_folds(model, "layer4", items, fcam_options={"colour_bins": 0, "crf_weight": 1e-9},
                    **options)
    assert len(built) == 2
    assert all(fc.config.seeds.colour_bins == 0 and fc.config.crf_weight == 1e-9 for fc in built)
    # The cache holds those fits: a run with other settings stops instead of reusing them.
    with pytest.raises(ValueError, match="its own --out"):
        bench.run_folds(model, "layer4", items, **options)
    same = {**options, "fcam_options": {"crf_weight": 1e-9, "colour_bins": 0}}
    bench.run_folds(model, "layer4", items, **same)
    assert len(built) == 2
    # So does a run whose options are the same but whose fcam defaults changed since: fit's
    # schedule, then F-CAM's configuration.
    current = bench.fit_defaults()
    with monkeypatch.context() as patch:
        patch.setattr(bench, "fit_defaults", lambda: {**current, "epochs": 11})
        with pytest.raises(ValueError, match="its own --out"):
            bench.run_folds(model, "layer4", items, **same)
    bench.run_folds(model, "layer4", items, **same)
    assert len(built) == 2

    class NewDefaults:
        @staticmethod
        def from_options(**opts: Any) -> FCAMConfig:
            return dataclasses.replace(FCAMConfig.from_options(**opts), seeds=SeedOptions(sl_max=99))

    monkeypatch.setattr(bench, "FCAMConfig", NewDefaults)
    with pytest.raises(ValueError, match="its own --out"):
        bench.run_folds(model, "layer4", items, **same)
