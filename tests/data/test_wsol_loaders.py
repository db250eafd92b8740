"""Loaders for the wsolevaluation layout, on fixture trees written in the exact on-disk formats:
comma-separated, no trailing newline, width-first sizes, 1-bit instance-mask PNGs, RGB ignore
PNGs, an empty image_sizes.txt and empty ignore fields for OpenImages."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from fcam.data import (
    CUBDataset,
    ILSVRCDataset,
    OpenImagesDataset,
    SyntheticWSOL,
    WSOLFormatError,
    read_wsol_metadata,
    write_wsol_layout,
    wsol_collate,
)
from fcam.metrics import BoxEvaluator, MaskEvaluator

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())


def _image(path: Path, width: int, height: int, seed: int) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)
    return rgb


# ----------------------------------------------------------------------------- CUB
CUB_IDS = [
    "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
    "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg",
    "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg",
    "002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg",
]
CUB_SIZES = [(40, 30), (30, 50), (40, 30), (25, 25)]  # (width, height)
CUB_BOXES = [(5, 3, 33, 27), (0, 0, 29, 49), (10, 10, 11, 11), (3, 4, 20, 21)]


@pytest.fixture
def cub(tmp_path):
    root, meta = tmp_path / "dataset" / "CUB", tmp_path / "metadata" / "CUB" / "test"
    for k, (image_id, (w, h)) in enumerate(zip(CUB_IDS, CUB_SIZES, strict=True)):
        _image(root / image_id, w, h, k)
    _write(meta / "image_ids.txt", "\n".join(CUB_IDS))
    _write(meta / "class_labels.txt", "\n".join(f"{i},{k // 2}" for k, i in enumerate(CUB_IDS)))
    _write(
        meta / "image_sizes.txt",
        "\n".join(f"{i},{w},{h}" for i, (w, h) in zip(CUB_IDS, CUB_SIZES, strict=True)),
    )
    _write(
        meta / "localization.txt",
        "\n".join(
            f"{i},{x0},{y0},{x1},{y1}"
            for i, (x0, y0, x1, y1) in zip(CUB_IDS, CUB_BOXES, strict=True)
        ),
    )
    return root, meta


def test_cub_metadata_is_width_first_without_trailing_newline(cub):
    _, meta = cub
    assert not (meta / "image_ids.txt").read_bytes().endswith(b"\n")
    parsed = read_wsol_metadata(meta)
    assert parsed.kind == "boxes" and parsed.image_ids == CUB_IDS
    assert [parsed.sizes[i] for i in CUB_IDS] == CUB_SIZES
    assert [parsed.labels[i] for i in CUB_IDS] == [0, 0, 1, 1]


def test_cub_boxes_rescale_with_int_truncation(cub):
    ds = CUBDataset(*cub)
    # 40 x 30 image: x * 224/40 = 5.6x, y * 224/30 = 7.4667y, truncated.
    assert ds[0]["boxes"].tolist() == [[28, 22, 184, 201]]
    # 30 x 50 image (portrait): x * 7.4667, y * 4.48 -> 29 * 7.4667 = 216.5, 49 * 4.48 = 219.5
    assert ds[1]["boxes"].tolist() == [[0, 0, 216, 219]]
    assert ds[2]["boxes"].tolist() == [[56, 74, 61, 82]]
    assert ds[1]["boxes"].dtype == torch.int64


def test_cub_image_is_the_protocol_transform(cub):
    root, meta = cub
    ds = CUBDataset(root, meta, return_raw=True)
    item = ds[1]
    reference = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )
    with Image.open(root / CUB_IDS[1]) as img:
        expected = reference(img.convert("RGB"))
    torch.testing.assert_close(item["image"], expected, rtol=0, atol=1e-6)
    assert item["raw"].dtype == torch.uint8 and item["raw"].shape == (3, 224, 224)
    torch.testing.assert_close(
        item["raw"].float() / 255,
        (expected * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)),
        rtol=0,
        atol=1e-5,
    )
    assert item["label"] == 0 and item["image_id"] == CUB_IDS[1] and item["index"] == 1
    assert "raw" not in CUBDataset(root, meta)[0]


def test_cub_custom_size(cub):
    ds = CUBDataset(*cub, size=112)
    item = ds[0]
    assert item["image"].shape == (3, 112, 112)
    assert item["boxes"].tolist() == [[14, 11, 92, 100]]


def test_collate_and_box_evaluator_end_to_end(cub):
    ds = CUBDataset(*cub)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=wsol_collate)))
    assert batch["image"].shape == (4, 3, 224, 224) and batch["label"].tolist() == [0, 0, 1, 1]
    assert isinstance(batch["boxes"], list) and len(batch["boxes"]) == 4
    maps = torch.zeros(4, 224, 224)
    for i, b in enumerate(batch["boxes"]):
        x0, y0, x1, y1 = b[0].tolist()
        maps[i, y0:y1, x0:x1] = 1.0  # box (x, y, x + w, y + h) = GT exactly
    ev = BoxEvaluator(cam_curve_interval=0.01)
    ev.update(maps, batch["boxes"], labels=batch["label"], logits=torch.eye(2)[batch["label"]])
    result = ev.compute()
    assert result.value == 100.0 and result.top1_loc == {30: 100.0, 50: 100.0, 70: 100.0}


# ----------------------------------------------------------------------------- ILSVRC
def test_ilsvrc_multiple_boxes(tmp_path):
    root, meta = tmp_path / "ILSVRC", tmp_path / "meta"
    ids = ["val/ILSVRC2012_val_00000001.JPEG", "val/ILSVRC2012_val_00000002.JPEG"]
    _image(root / ids[0], 50, 40, 0)
    _image(root / ids[1], 64, 32, 1)
    _write(meta / "image_ids.txt", "\n".join(ids))
    _write(meta / "class_labels.txt", f"{ids[0]},65\n{ids[1]},999")
    _write(meta / "image_sizes.txt", f"{ids[0]},50,40\n{ids[1]},64,32")
    _write(
        meta / "localization.txt", f"{ids[0]},1,2,30,20\n{ids[1]},0,0,63,31\n{ids[1]},10,5,20,15"
    )
    ds = ILSVRCDataset(root, meta, size=64)
    assert ds[0]["boxes"].tolist() == [[1, 3, 38, 32]]
    assert ds[1]["boxes"].tolist() == [[0, 0, 63, 62], [10, 10, 20, 30]]
    assert ds[1]["label"] == 999
    batch = wsol_collate([ds[0], ds[1]])
    assert [b.shape[0] for b in batch["boxes"]] == [1, 2]


# ----------------------------------------------------------------------------- OpenImages
def _mask_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).convert("1").save(path)


def _ignore_png(path: Path, mask: np.ndarray) -> None:
    rgb = np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
    Image.fromarray(rgb, mode="RGB").save(path)


@pytest.fixture
def openimages(tmp_path):
    """2 classes x 2 images of 28 x 20 (w x h); image 0 has two instance masks, image 2 a
    non-empty ignore box overlapping its foreground."""
    root = tmp_path / "OpenImages"
    meta = tmp_path / "metadata" / "OpenImages" / "val"
    ids = [
        "val/01226z/32fdab44f6e415f1.jpg",
        "val/01226z/3a29f0b33894d4a6.jpg",
        "val/0bt_c3/1cd9ac0169ec7df0.jpg",
        "val/0bt_c3/3b3b9931325d65c9.jpg",
    ]
    rng = np.random.default_rng(0)
    lines, fgs, ignores = [], [], []
    for k, image_id in enumerate(ids):
        _image(root / image_id, 28, 20, k)
        stem = image_id[:-4]
        cls = image_id.split("/")[1]
        count = 2 if k == 0 else 1
        fg = np.zeros((20, 28), dtype=bool)
        for j in range(count):
            m = np.zeros((20, 28), dtype=bool)
            y, x = rng.integers(0, 12, 2)
            m[y : y + 6, x : x + 9] = True
            fg |= m
            mask_path = f"{stem}_m{cls}_{j:08x}.png"
            _mask_png(root / mask_path, m)
            ignore_field = f"{stem}_ignore.png" if j == 0 else ""
            lines.append(f"{image_id},{mask_path},{ignore_field}")
        ignore = np.zeros((20, 28), dtype=bool)
        if k == 2:
            ignore[0:12, 0:14] = True
        _ignore_png(root / f"{stem}_ignore.png", ignore)
        fgs.append(fg)
        ignores.append(ignore & ~fg)
    _write(meta / "image_ids.txt", "\n".join(ids))
    _write(meta / "class_labels.txt", "\n".join(f"{i},{k // 2}" for k, i in enumerate(ids)))
    _write(meta / "image_sizes.txt", "")
    _write(meta / "localization.txt", "\n".join(lines))
    return root, meta, ids, fgs, ignores


def test_openimages_files_are_in_the_real_formats(openimages):
    root, meta, _, _, _ = openimages
    assert (meta / "image_sizes.txt").stat().st_size == 0
    lines = (meta / "localization.txt").read_text().split("\n")
    assert lines[1].endswith(",") and lines[0].endswith("_ignore.png")
    with Image.open(root / "val/01226z/32fdab44f6e415f1_m01226z_00000000.png") as m:
        assert m.mode == "1"
    with Image.open(root / "val/0bt_c3/1cd9ac0169ec7df0_ignore.png") as m:
        assert m.mode == "RGB"


def test_openimages_masks_union_ignore_and_nearest_resize(openimages):
    root, meta, ids, fgs, ignores = openimages
    ds = OpenImagesDataset(root, meta, size=56, num_classes=2)
    parsed = ds.metadata
    assert parsed.kind == "masks" and len(parsed.mask_paths[ids[0]]) == 2
    assert parsed.sizes == {}
    for k in range(4):
        item = ds[k]
        # 28 x 20 -> 56 x 56: nearest neighbour repeats columns twice and rows 2.8 times.
        expected_fg = (
            cv2.resize(fgs[k].astype(np.float32), (56, 56), interpolation=cv2.INTER_NEAREST) > 0.5
        )
        expected_ignore = (
            cv2.resize(ignores[k].astype(np.float32), (56, 56), interpolation=cv2.INTER_NEAREST)
            > 0.5
        )
        np.testing.assert_array_equal(item["mask"].numpy(), expected_fg)
        np.testing.assert_array_equal(item["ignore"].numpy(), expected_ignore & ~expected_fg)
        assert item["mask"].dtype == torch.bool and item["label"] == k // 2
    # Hand check of the union: image 0's two 6 x 9 instances.
    assert (
        ds[0]["mask"].any()
        and ds[2]["ignore"].sum() > 0
        and not (ds[2]["ignore"] & ds[2]["mask"]).any()
    )
    assert not ds[0]["ignore"].any()


def test_openimages_perfect_map_pxap_is_100(openimages):
    root, meta, *_ = openimages
    ds = OpenImagesDataset(root, meta, size=64, num_classes=2)
    batch = wsol_collate([ds[k] for k in range(4)])
    ev = MaskEvaluator(cam_curve_interval=0.01)
    maps = batch["mask"].float()
    maps[batch["ignore"]] = 1.0  # ignore pixels may score anything
    ev.update(maps, batch["mask"], batch["ignore"])
    assert ev.compute().value == 100.0


def test_openimages_mask_size_mismatch(openimages):
    root, meta, _, _, _ = openimages
    bad = root / "val/01226z/3a29f0b33894d4a6_m01226z_00000000.png"
    _mask_png(bad, np.ones((10, 10), dtype=bool))
    ds = OpenImagesDataset(root, meta, num_classes=2)
    with pytest.raises(WSOLFormatError, match=r"3a29f0b33894d4a6_m01226z_00000000\.png is 10x10"):
        ds[1]


def test_openimages_later_line_with_ignore_path_is_rejected(openimages):
    _, meta, *_ = openimages
    text = (meta / "localization.txt").read_text().split("\n")
    text[1] = text[1] + "val/01226z/other_ignore.png"
    _write(meta / "localization.txt", "\n".join(text))
    with pytest.raises(WSOLFormatError, match=r"localization\.txt, line 2: the ignore path"):
        read_wsol_metadata(meta)


def test_openimages_missing_mask_file(openimages):
    root, meta, _, _, _ = openimages
    (root / "val/0bt_c3/3b3b9931325d65c9_ignore.png").unlink()
    with pytest.raises(FileNotFoundError, match="3b3b9931325d65c9_ignore.png"):
        OpenImagesDataset(root, meta, num_classes=2)[3]


# ----------------------------------------------------------------------------- errors
def test_missing_metadata_file_is_named(cub):
    root, meta = cub
    (meta / "class_labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"class_labels\.txt"):
        CUBDataset(root, meta)


@pytest.mark.parametrize(
    ("name", "line_no", "bad", "match"),
    [
        (
            "localization.txt",
            2,
            "{id},1,2,3",
            r"localization\.txt, line 2: expected 'image_id,x0,y0,x1,y1'",
        ),
        ("localization.txt", 3, "{id},1,2,x,4", r"localization\.txt, line 3: coordinate 'x'"),
        ("localization.txt", 1, "{id},5,2,3,4", r"localization\.txt, line 1: box must be"),
        ("class_labels.txt", 4, "{id},two", r"class_labels\.txt, line 4: label 'two'"),
        ("class_labels.txt", 2, "{id},200", r"class_labels\.txt, line 2: unknown class id 200"),
        (
            "image_sizes.txt",
            3,
            "{id},40",
            r"image_sizes\.txt, line 3: expected 'image_id,width,height'",
        ),
        (
            "image_sizes.txt",
            1,
            "{id},0,30",
            r"image_sizes\.txt, line 1: image size must be positive",
        ),
    ],
)
def test_malformed_lines_name_file_and_line(cub, name, line_no, bad, match):
    root, meta = cub
    lines = (meta / name).read_text().split("\n")
    lines[line_no - 1] = bad.format(id=CUB_IDS[line_no - 1])
    _write(meta / name, "\n".join(lines))
    with pytest.raises(WSOLFormatError, match=match):
        CUBDataset(root, meta)


def test_unknown_class_id_respects_num_classes(cub):
    root, meta = cub
    with pytest.raises(WSOLFormatError, match="unknown class id 1"):
        CUBDataset(root, meta, num_classes=1)


def test_image_without_label_or_size(cub):
    root, meta = cub
    _write(meta / "image_sizes.txt", "\n".join(f"{i},40,30" for i in CUB_IDS[:3]))
    with pytest.raises(
        WSOLFormatError, match=r"image_sizes\.txt: no size for image_id .*0003_1033"
    ):
        CUBDataset(root, meta)


def test_trailing_newline_and_crlf_are_tolerated(cub):
    root, meta = cub
    for name in ("image_ids.txt", "localization.txt"):
        _write(meta / name, (meta / name).read_text().replace("\n", "\r\n") + "\r\n")
    assert CUBDataset(root, meta)[0]["boxes"].tolist() == [[28, 22, 184, 201]]


def test_missing_image_file(cub):
    root, meta = cub
    (root / CUB_IDS[2]).unlink()
    ds = CUBDataset(root, meta)
    with pytest.raises(FileNotFoundError, match="Laysan_Albatross_0002_1027.jpg"):
        ds[2]


def test_kind_mismatch(cub):
    root, meta = cub
    with pytest.raises(WSOLFormatError, match="holds boxes annotations, expected masks"):
        OpenImagesDataset(root, meta)


# ----------------------------------------------------------------------------- writer
def test_writer_masks_round_trip_with_synthetic_data(tmp_path):
    ds = SyntheticWSOL(4, size=32, seed=3, split="test")
    samples = []
    for i in range(len(ds)):
        item = ds[i]
        ignore = np.zeros((32, 32), dtype=bool)
        ignore[:4] = True
        samples.append(
            {
                "image_id": ds.image_id(i),
                "image": item["raw"],
                "label": item["label"],
                "mask": item["mask"],
                "ignore": ignore,
            }
        )
    written = write_wsol_layout(samples, tmp_path / "images", tmp_path / "meta", kind="masks")
    assert (tmp_path / "meta" / "image_sizes.txt").read_bytes() == b""
    for name in ("image_ids.txt", "class_labels.txt", "localization.txt"):
        assert not (tmp_path / "meta" / name).read_bytes().endswith(b"\n")
    mask_file = tmp_path / "images" / written.mask_paths[written.image_ids[0]][0]
    with Image.open(mask_file) as m:
        assert m.mode == "1"
    loaded = OpenImagesDataset(
        tmp_path / "images", tmp_path / "meta", size=32, num_classes=5, return_raw=True
    )
    assert loaded.image_ids == [ds.image_id(i) for i in range(4)]
    for i in range(4):
        a, b = ds[i], loaded[i]
        assert torch.equal(a["raw"], b["raw"])  # PNG is lossless and the size is unchanged
        assert torch.equal(a["mask"], b["mask"]) and b["label"] == a["label"]
        assert torch.equal(b["ignore"], torch.from_numpy(samples[i]["ignore"]) & ~a["mask"])


def test_writer_boxes_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    samples = [
        {
            "image_id": "a/1.png",
            "image": rng.integers(0, 256, (30, 40, 3), dtype=np.uint8),
            "label": 0,
            "box": [5, 3, 33, 27],
        },
        {
            "image_id": "b/2.jpg",
            "image": rng.integers(0, 256, (50, 30, 3), dtype=np.uint8),
            "label": 1,
            "boxes": torch.tensor([[0, 0, 29, 49], [1, 2, 3, 4]]),
        },
    ]
    write_wsol_layout(samples, tmp_path / "img", tmp_path / "meta", kind="boxes")
    assert (tmp_path / "meta" / "image_sizes.txt").read_text() == "a/1.png,40,30\nb/2.jpg,30,50"
    assert (
        tmp_path / "meta" / "localization.txt"
    ).read_text() == "a/1.png,5,3,33,27\nb/2.jpg,0,0,29,49\nb/2.jpg,1,2,3,4"
    ds = CUBDataset(tmp_path / "img", tmp_path / "meta")
    assert ds[0]["boxes"].tolist() == [[28, 22, 184, 201]]
    assert ds[1]["boxes"].tolist() == [[0, 0, 216, 219], [7, 8, 22, 17]]
    leftovers = [p for p in (tmp_path / "meta").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_writer_errors(tmp_path):
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="kind"):
        write_wsol_layout([], tmp_path, tmp_path / "m", kind="points")
    with pytest.raises(ValueError, match="has shape"):
        write_wsol_layout(
            [{"image_id": "x.png", "image": img, "label": 0, "mask": np.zeros((4, 4), bool)}],
            tmp_path,
            tmp_path / "m",
            kind="masks",
        )
    with pytest.raises(ValueError, match="relative path"):
        write_wsol_layout(
            [{"image_id": "../x.png", "image": img, "label": 0, "box": [0, 0, 1, 1]}],
            tmp_path,
            tmp_path / "m",
            kind="boxes",
        )
    with pytest.raises(ValueError, match="suffix"):
        write_wsol_layout(
            [{"image_id": "x.bmp", "image": img, "label": 0, "box": [0, 0, 1, 1]}],
            tmp_path,
            tmp_path / "m",
            kind="boxes",
        )


def test_grey_statistics_give_a_grey_classifiers_input(cub):
    # torchvision's Grayscale (PIL's "L", rounded to uint8) against the unrounded luma: 1/255.
    root, meta = cub
    item = CUBDataset(root, meta, return_raw=True, mean=(0.5,), std=(0.25,))[1]
    reference = transforms.Compose([transforms.Resize((224, 224)), transforms.Grayscale(),
                                    transforms.ToTensor(), transforms.Normalize((0.5,), (0.25,))])
    with Image.open(root / CUB_IDS[1]) as img:
        expected = reference(img.convert("RGB"))
    assert item["image"].shape == (1, 224, 224) and item["raw"].shape == (3, 224, 224)
    torch.testing.assert_close(item["image"], expected, rtol=0, atol=1 / 255 / 0.25 + 1e-6)
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        CUBDataset(root, meta, mean=(0.5, 0.5), std=(0.5, 0.5))
    with pytest.raises(ValueError, match="sequences of numbers"):
        CUBDataset(root, meta, mean=0.5, std=0.5)
