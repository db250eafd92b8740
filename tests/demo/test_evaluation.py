"""The demo's report helpers (tables, JSON, gains) and its re-exports of fcam.evaluation."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

import fcam.demo
import fcam.evaluation
from fcam.demo.report import format_table, gain_lines, results_json, write_png
from fcam.evaluation import LocalizationScores


def test_demo_reexports_the_evaluation_package() -> None:
    assert fcam.demo.evaluate_localization is fcam.evaluation.evaluate_localization
    assert fcam.demo.LocalizationScores is fcam.evaluation.LocalizationScores
    assert format_table is fcam.evaluation.format_table


def test_write_png_is_atomic_and_readable(tmp_path) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    path = write_png(tmp_path / "sub" / "a.png", rgb)
    with Image.open(path) as im:
        assert im.size == (6, 4) and im.getpixel((0, 0)) == (200, 0, 0)
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]


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
