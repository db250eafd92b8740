"""Raw CUB_200_2011 download layout -> wsolevaluation records and metadata files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcam.data import CUBDataset, WSOLFormatError, convert_cub_raw, read_cub_raw

# (img_id, path under images/, class_id, is_train, "x y w h", (width, height))
ROWS = [
    (
        1,
        "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
        1,
        0,
        "60.0 27.0 325.0 304.0",
        (500, 335),
    ),
    (
        2,
        "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg",
        1,
        1,
        "5.7 3.2 27.9 23.6",
        (40, 30),
    ),
    (3, "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg", 2, 0, "0.0 0.0 29.0 49.0", (30, 50)),
    (4, "002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg", 2, 1, "1.5 2.5 10.0 10.0", (25, 25)),
]


def _write(path: Path, lines) -> None:
    path.write_text("\n".join(lines) + "\n")  # the raw download does end with a newline


@pytest.fixture
def cub_raw(tmp_path):
    root = tmp_path / "CUB_200_2011"
    for img_id, rel, *_, (w, h) in ROWS:
        path = root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = np.random.default_rng(img_id).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(path)
    _write(root / "images.txt", (f"{r[0]} {r[1]}" for r in ROWS))
    _write(root / "image_class_labels.txt", (f"{r[0]} {r[2]}" for r in ROWS))
    _write(root / "train_test_split.txt", (f"{r[0]} {r[3]}" for r in ROWS))
    _write(root / "bounding_boxes.txt", (f"{r[0]} {r[4]}" for r in ROWS))
    _write(root / "classes.txt", ["1 001.Black_footed_Albatross", "2 002.Laysan_Albatross"])
    return root


def test_read_raw_split_labels_boxes_sizes(cub_raw):
    test = read_cub_raw(cub_raw, "test")
    assert test.image_ids == [ROWS[0][1], ROWS[2][1]]
    assert [test.labels[i] for i in test.image_ids] == [0, 1]  # class id - 1
    # wsolevaluation's first CUB test box: 60, 27, 325, 304 (x, y, w, h) -> 60, 27, 385, 331.
    assert test.boxes[ROWS[0][1]] == [(60, 27, 385, 331)]
    assert test.boxes[ROWS[2][1]] == [(0, 0, 29, 49)]
    assert test.sizes[ROWS[0][1]] == (500, 335) and test.sizes[ROWS[2][1]] == (30, 50)
    train = read_cub_raw(cub_raw, "train")
    # x, y, x + w, y + h truncated: 5.7 -> 5, 3.2 -> 3, 33.6 -> 33, 26.8 -> 26.
    assert train.boxes[ROWS[1][1]] == [(5, 3, 33, 26)]
    assert train.boxes[ROWS[3][1]] == [(1, 2, 11, 12)]


def test_convert_writes_wsolevaluation_files(cub_raw, tmp_path):
    out = convert_cub_raw(cub_raw, tmp_path / "metadata" / "CUB")
    test = out["test"]
    assert (test / "image_ids.txt").read_text() == f"{ROWS[0][1]}\n{ROWS[2][1]}"
    assert (test / "class_labels.txt").read_text() == f"{ROWS[0][1]},0\n{ROWS[2][1]},1"
    assert (test / "image_sizes.txt").read_text() == f"{ROWS[0][1]},500,335\n{ROWS[2][1]},30,50"
    assert (
        test / "localization.txt"
    ).read_text() == f"{ROWS[0][1]},60,27,385,331\n{ROWS[2][1]},0,0,29,49"
    assert (out["train"] / "image_ids.txt").read_text() == f"{ROWS[1][1]}\n{ROWS[3][1]}"


def test_from_raw_equals_converted_layout(cub_raw, tmp_path):
    out = convert_cub_raw(cub_raw, tmp_path / "metadata")
    direct = CUBDataset.from_raw(cub_raw, "test", size=64)
    converted = CUBDataset(cub_raw / "images", out["test"], size=64)
    assert len(direct) == len(converted) == 2
    for a, b in zip(direct, converted, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
        assert a["label"] == b["label"]
    # 500 x 335 -> 64: 60 * 0.128 = 7.68, 27 * 0.19104 = 5.16, 385 * 0.128 = 49.28,
    # 331 * 0.19104 = 63.2
    assert direct[0]["boxes"].tolist() == [[7, 5, 49, 63]]


def test_unknown_class_id(cub_raw):
    _write(cub_raw / "image_class_labels.txt", ["1 1", "2 1", "3 7", "4 2"])
    with pytest.raises(
        WSOLFormatError, match=r"image_class_labels\.txt, line 3: unknown class id 7"
    ):
        read_cub_raw(cub_raw, "test")


def test_malformed_box_line(cub_raw):
    _write(cub_raw / "bounding_boxes.txt", ["1 60 27 325 304", "2 1 2 3"])
    with pytest.raises(WSOLFormatError, match=r"bounding_boxes\.txt, line 2: expected"):
        read_cub_raw(cub_raw, "test")


def test_missing_file_and_entry(cub_raw):
    _write(cub_raw / "train_test_split.txt", ["1 0", "2 1", "3 0"])
    with pytest.raises(WSOLFormatError, match=r"train_test_split\.txt: no entry for img_id 4"):
        read_cub_raw(cub_raw, "train")
    (cub_raw / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"classes\.txt"):
        read_cub_raw(cub_raw)
    with pytest.raises(ValueError, match="split"):
        read_cub_raw(cub_raw, "val")
