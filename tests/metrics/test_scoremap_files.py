"""wsolevaluation's .npy score-map workflow: save_scoremaps + evaluate_scoremap_dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fcam.data import write_wsol_layout
from fcam.metrics import evaluate_scoremap_dir, maxboxacc, pxap, save_scoremaps

IDS = ["001.A/a_1.jpg", "001.A/a_2.jpg", "002.B/b_1.jpg"]
SIZES = [(40, 30), (30, 50), (64, 64)]  # (width, height)
BOXES = [(5, 3, 33, 27), (0, 0, 29, 49), (8, 8, 40, 56)]


def _box_split(meta: Path) -> None:
    meta.mkdir(parents=True)
    (meta / "image_ids.txt").write_text("\n".join(IDS))
    (meta / "class_labels.txt").write_text("\n".join(f"{i},{k}" for k, i in enumerate(IDS)))
    sizes = (f"{i},{w},{h}" for i, (w, h) in zip(IDS, SIZES, strict=True))
    (meta / "image_sizes.txt").write_text("\n".join(sizes))
    boxes = (f"{i},{','.join(map(str, b))}" for i, b in zip(IDS, BOXES, strict=True))
    (meta / "localization.txt").write_text("\n".join(boxes))


def test_box_split_matches_maxboxacc(tmp_path):
    _box_split(tmp_path / "meta")
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.random((3, 32, 32)).astype(np.float32))
    files = save_scoremaps(tmp_path / "scoremaps", IDS, maps)
    assert files[0] == tmp_path / "scoremaps" / "001.A" / "a_1.jpg.npy"
    result = evaluate_scoremap_dir(
        tmp_path / "scoremaps", tmp_path / "meta", size=32, cam_curve_interval=0.01
    )
    # GT boxes in the 32 x 32 frame: resize_bbox by hand.
    gts = [np.array([[4, 3, 26, 28]]), np.array([[0, 0, 30, 31]]), np.array([[4, 4, 20, 28]])]
    assert result.value == maxboxacc(maps, gts, cam_curve_interval=0.01)
    v1 = evaluate_scoremap_dir(tmp_path / "scoremaps", tmp_path / "meta", size=32, version=1)
    assert v1.metric == "MaxBoxAcc" and v1.value == maxboxacc(maps, gts, version=1)


def test_perfect_box_maps_and_stem_named_files(tmp_path):
    _box_split(tmp_path / "meta")
    root = tmp_path / "scoremaps"
    for image_id, (w, h), (x0, y0, x1, y1) in zip(IDS, SIZES, BOXES, strict=True):
        scoremap = np.zeros((64, 64))
        # The GT box in the 64 frame, drawn so that (x, y, x + w, y + h) equals it.
        gx0, gy0, gx1, gy1 = (
            int(x0 * 64 / w),
            int(y0 * 64 / h),
            int(x1 * 64 / w),
            int(y1 * 64 / h),
        )
        scoremap[gy0:gy1, gx0:gx1] = 1.0
        path = root / Path(image_id).with_suffix(".npy")  # the README's naming
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, scoremap)
    assert (
        evaluate_scoremap_dir(root, tmp_path / "meta", size=64, cam_curve_interval=0.01).value
        == 100.0
    )


def test_mask_split(tmp_path):
    rng = np.random.default_rng(1)
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[0, 2:8, 3:12] = True
    masks[1, 10:, :6] = True
    samples = [
        {
            "image_id": f"val/c/{k}.png",
            "image": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
            "label": 0,
            "mask": masks[k],
        }
        for k in range(2)
    ]
    write_wsol_layout(samples, tmp_path / "oi", tmp_path / "meta", kind="masks")
    ids = [s["image_id"] for s in samples]
    save_scoremaps(tmp_path / "maps", ids, masks.astype(np.float32))
    result = evaluate_scoremap_dir(
        tmp_path / "maps", tmp_path / "meta", mask_root=tmp_path / "oi", size=16
    )
    assert result.value == 100.0
    save_scoremaps(tmp_path / "flat", ids, np.full((2, 16, 16), 0.5))
    flat = evaluate_scoremap_dir(
        tmp_path / "flat", tmp_path / "meta", mask_root=tmp_path / "oi", size=16
    )
    assert (
        flat.value
        == pytest.approx(pxap(np.full((2, 16, 16), 0.5), masks))
        == pytest.approx(100 * masks.mean())
    )
    with pytest.raises(ValueError, match="mask_root is required"):
        evaluate_scoremap_dir(tmp_path / "maps", tmp_path / "meta", size=16)


def test_errors(tmp_path):
    _box_split(tmp_path / "meta")
    save_scoremaps(tmp_path / "maps", IDS[:2], np.zeros((2, 8, 8)))
    with pytest.raises(FileNotFoundError, match=r"b_1\.jpg\.npy"):
        evaluate_scoremap_dir(tmp_path / "maps", tmp_path / "meta", size=8)
    save_scoremaps(tmp_path / "maps", IDS[2:], np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match=r"has shape \(4, 4\), expected \(8, 8\)"):
        evaluate_scoremap_dir(tmp_path / "maps", tmp_path / "meta", size=8)
    with pytest.raises(FileNotFoundError, match="scoremap_root"):
        evaluate_scoremap_dir(tmp_path / "none", tmp_path / "meta")
    with pytest.raises(ValueError, match="2 image_ids for 1 maps"):
        save_scoremaps(tmp_path / "maps", IDS[:2], np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="relative path"):
        save_scoremaps(tmp_path / "maps", ["../x.jpg"], np.zeros((1, 4, 4)))
