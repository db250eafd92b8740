"""The embedded synthetic WSOL dataset: determinism, GT consistency, balance, item contract."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fcam.data import CLASSES, SyntheticWSOL
from fcam.data.synthetic import IMAGENET_MEAN, IMAGENET_STD, generate_sample


def _arrays(ds: SyntheticWSOL, i: int) -> tuple[np.ndarray, np.ndarray]:
    item = ds[i]
    return item["raw"].numpy(), item["mask"].numpy()


def test_same_seed_same_pixels_across_instances_and_cache() -> None:
    a = SyntheticWSOL(6, size=48, seed=3, split="train")
    b = SyntheticWSOL(6, size=48, seed=3, split="train", cache=False)
    # Access b in reverse order: items must not depend on generation order.
    for i in reversed(range(6)):
        ra, ma = _arrays(a, i)
        rb, mb = _arrays(b, i)
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(ma, mb)
    # Cached second access returns the same thing.
    np.testing.assert_array_equal(_arrays(a, 2)[0], _arrays(a, 2)[0])


@pytest.mark.parametrize("other", [{"seed": 4}, {"split": "test"}, {"split": "val"}])
def test_seed_and_split_change_the_images(other: dict) -> None:
    base = {"n": 5, "size": 48, "seed": 3, "split": "train"}
    a = SyntheticWSOL(**base)
    b = SyntheticWSOL(**{**base, **other})
    for i in range(5):
        assert not np.array_equal(_arrays(a, i)[0], _arrays(b, i)[0])


def test_box_is_bounding_box_of_a_single_connected_mask() -> None:
    ds = SyntheticWSOL(40, size=64, seed=11, split="test")
    for i in range(len(ds)):
        item = ds[i]
        mask = item["mask"].numpy()
        ys, xs = np.nonzero(mask)
        assert ys.size > 0
        assert item["box"].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
        x0, y0, x1, y1 = item["box"].tolist()
        assert 0 <= x0 < x1 < 64 and 0 <= y0 < y1 < 64
        # One object per image: a single 8-connected component (distractors are not in it).
        n_labels, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        assert n_labels == 2
        # Objects are neither specks nor the whole frame.
        assert 0.01 < mask.mean() < 0.6


def test_box_of_rejects_empty_mask_and_matches_manual_box() -> None:
    m = np.zeros((10, 12), dtype=bool)
    m[2:5, 7:9] = True
    m[8, 3] = True
    assert SyntheticWSOL.box_of(m) == [3, 2, 8, 8]
    with pytest.raises(ValueError, match="empty"):
        SyntheticWSOL.box_of(np.zeros((4, 4), dtype=bool))


def test_labels_balanced_and_valid() -> None:
    ds = SyntheticWSOL(23, size=32, seed=0)
    labels = [ds[i]["label"] for i in range(len(ds))]
    counts = np.bincount(labels, minlength=len(CLASSES))
    assert len(counts) == len(CLASSES) == ds.num_classes
    assert counts.max() - counts.min() <= 1
    assert all(ds.image_id(i).split("/")[1] == CLASSES[labels[i]] for i in range(len(ds)))


def test_item_fields_types_and_normalisation() -> None:
    ds = SyntheticWSOL(3, size=40, seed=2, split="val")
    item = ds[1]
    assert set(item) == {"image", "raw", "label", "mask", "box", "index"}
    assert item["image"].shape == (3, 40, 40) and item["image"].dtype == torch.float32
    assert item["raw"].shape == (3, 40, 40) and item["raw"].dtype == torch.uint8
    assert item["mask"].shape == (40, 40) and item["mask"].dtype == torch.bool
    assert item["box"].dtype == torch.int64 and item["index"] == 1
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(item["image"], (item["raw"].float() / 255 - mean) / std)
    # Negative indices follow Python semantics.
    assert torch.equal(ds[-1]["raw"], ds[2]["raw"]) and ds[-1]["index"] == 2


def test_default_collate_batches_items() -> None:
    batch = next(iter(DataLoader(SyntheticWSOL(6, size=32, seed=0), batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32)
    assert batch["mask"].shape == (4, 32, 32)
    assert batch["box"].shape == (4, 4)
    assert batch["label"].tolist() == [0, 1, 2, 3]


def test_object_pixels_carry_class_colour_statistics() -> None:
    # The object is painted from its class's hue band, so the mean hue inside the mask of a
    # "rectangle" (blue band) differs from a "triangle" (green band); the background does not
    # follow the label.
    ds = SyntheticWSOL(30, size=64, seed=5)
    hues: dict[int, list[float]] = {1: [], 2: []}
    for i in range(len(ds)):
        item = ds[i]
        if item["label"] in hues:
            hsv = cv2.cvtColor(item["raw"].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2HSV)
            hues[item["label"]].append(float(np.median(hsv[..., 0][item["mask"].numpy()])))
    assert min(hues[1]) > max(hues[2])  # OpenCV hue: green ~60, blue ~110


def test_distractors_share_object_colours_outside_the_mask() -> None:
    # Distractor patches reuse class colours, so in some images pixels outside the mask lie in
    # the object's own hue band: colour alone cannot localise the object.
    ds = SyntheticWSOL(40, size=64, seed=7)
    shared = 0
    for i in range(len(ds)):
        item = ds[i]
        hsv = cv2.cvtColor(item["raw"].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2HSV).astype(int)
        mask = item["mask"].numpy()
        inside = np.median(hsv[..., 0][mask])
        sat_out = hsv[..., 1][~mask] > 100
        close = np.abs(hsv[..., 0][~mask] - inside) < 8
        shared += int((close & sat_out).mean() > 0.02)
    assert shared >= 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must"),
        ({"n": 2.5}, "n must"),
        ({"n": 3, "size": 16}, "size must"),
        ({"n": 3, "seed": -1}, "seed must"),
        ({"n": 3, "split": "dev"}, "split must"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticWSOL(**kwargs)


def test_index_out_of_range_and_bad_label() -> None:
    with pytest.raises(IndexError):
        SyntheticWSOL(3, size=32)[3]
    with pytest.raises(ValueError, match="label"):
        generate_sample(32, len(CLASSES), np.random.default_rng(0))


@pytest.mark.parametrize("kind", ["masks", "boxes"])
def test_round_trip_through_wsol_writer_and_loader(tmp_path, kind: str) -> None:
    from fcam.data import WSOLDataset

    ds = SyntheticWSOL(7, size=40, seed=9, split="test")
    meta = ds.write_wsol(tmp_path, kind=kind)
    assert meta.image_ids == [ds.image_id(i) for i in range(7)]
    metadata_dir = tmp_path / "metadata" / "test"
    assert sorted(p.name for p in metadata_dir.iterdir()) == [
        "class_labels.txt",
        "image_ids.txt",
        "image_sizes.txt",
        "localization.txt",
    ]
    loaded = WSOLDataset(
        tmp_path / "images", metadata_dir, size=40, num_classes=len(CLASSES), return_raw=True
    )
    assert loaded.kind == kind and len(loaded) == 7
    for i in range(7):
        a, b = ds[i], loaded[i]
        assert b["label"] == a["label"] and b["image_id"] == ds.image_id(i)
        # PNG is lossless and the loader's resize is the identity at the same size.
        assert torch.equal(b["raw"], a["raw"])
        torch.testing.assert_close(b["image"], a["image"])
        if kind == "masks":
            assert torch.equal(b["mask"], a["mask"])
            assert not b["ignore"].any()
        else:
            assert b["boxes"].tolist() == [a["box"].tolist()]
