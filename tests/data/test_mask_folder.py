"""MaskFolder: pairing by stem, resizing to the mask's size, thresholding, items, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fcam.data import MaskFolder
from fcam.metrics import pxap


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1 + 1, x0:x1 + 1] = 255
    return mask


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three pairs: a scaled-up photograph (.jpg), a same-size .png, a .jpeg mask with noise."""
    (tmp_path / "rgb").mkdir()
    (tmp_path / "figure_ground").mkdir()
    # a: the photograph is 2x its mask (same frame, as in the Weizmann database).
    Image.fromarray(_photo(64, 96, 0)).save(tmp_path / "rgb" / "a.png")
    Image.fromarray(_mask(32, 48, (12, 8, 35, 23))).save(tmp_path / "figure_ground" / "a.png")
    # b: same size, JPEG photograph, PNG mask.
    Image.fromarray(_photo(32, 32, 1)).save(tmp_path / "rgb" / "b.jpg")
    Image.fromarray(_mask(32, 32, (0, 0, 15, 31))).save(tmp_path / "figure_ground" / "b.png")
    # c: a grey mask with values either side of the threshold (JPEG-like noise).
    Image.fromarray(_photo(32, 32, 2)).save(tmp_path / "rgb" / "c.jpeg")
    mask = np.full((32, 32), 20, np.uint8)
    mask[16:, 16:] = 230
    mask[0, 0] = 127  # exactly the threshold: background (> 127 is the object)
    mask[31, 31] = 128
    Image.fromarray(mask).save(tmp_path / "figure_ground" / "c.png")
    return tmp_path


def test_pairs_by_stem_and_items(folder: Path) -> None:
    ds = MaskFolder(folder, size=32, label=339)
    assert len(ds) == 3 and ds.names == ["a", "b", "c"]
    item = ds[1]
    assert set(item) == {"image", "raw", "mask", "box", "label", "name"}
    assert item["name"] == "b" and item["label"] == 339
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["raw"].dtype == torch.uint8 and item["mask"].dtype == torch.bool
    # b is already 32 x 32: the raw image is the file, the mask the drawn box.
    assert torch.equal(item["raw"], torch.from_numpy(np.array(Image.open(folder / "rgb" / "b.jpg"))).permute(2, 0, 1))
    assert item["mask"][:, :16].all() and not item["mask"][:, 16:].any()
    assert item["box"].tolist() == [0, 0, 15, 31]
    # ImageNet normalisation of the raw pixels.
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(item["image"], (item["raw"].float() / 255 - mean) / std, atol=1e-6)


def test_photograph_resized_to_its_mask_first(folder: Path) -> None:
    ds = MaskFolder(folder, size=48)
    item = ds[0]
    # The 96 x 64 photograph goes to the mask's 48 x 32 first, then to 48 x 48.
    photo = Image.open(folder / "rgb" / "a.png").resize((48, 32), Image.Resampling.BILINEAR)
    expected = np.array(photo.resize((48, 48), Image.Resampling.BILINEAR))
    assert torch.equal(item["raw"], torch.from_numpy(expected).permute(2, 0, 1))
    # Mask 48 x 32 -> 48 x 48 (nearest): rows 8..23 become 12..35, columns unchanged.
    ys, xs = torch.nonzero(item["mask"], as_tuple=True)
    assert (int(xs.min()), int(xs.max())) == (12, 35)
    assert (int(ys.min()), int(ys.max())) == (12, 35)
    assert item["box"].tolist() == [12, 12, 35, 35]
    assert "label" not in item  # label=None: the prediction picks the class


def test_threshold(folder: Path) -> None:
    mask = MaskFolder(folder, size=32)[2]["mask"]
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[16:, 16:] = True
    assert torch.equal(mask, expected)  # 127 is background, 128 the object
    lower = MaskFolder(folder, size=32, threshold=10)[2]["mask"]
    assert lower.all()


def test_feeds_loaders_and_metrics(folder: Path) -> None:
    ds = MaskFolder(folder, size=32, label=3)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["label"].tolist() == [3, 3, 3]
    assert batch["name"] == ["a", "b", "c"]
    # The mask itself as a map is a perfect score.
    assert pxap(batch["mask"].float(), batch["mask"]) == pytest.approx(100.0)


def test_colour_masks(tmp_path: Path) -> None:
    (tmp_path / "rgb").mkdir()
    (tmp_path / "figure_ground").mkdir()
    Image.fromarray(_photo(16, 16, 0)).save(tmp_path / "rgb" / "x.png")
    white = np.repeat(_mask(16, 16, (2, 2, 9, 9))[..., None], 3, axis=2)
    Image.fromarray(white).save(tmp_path / "figure_ground" / "x.png")
    assert MaskFolder(tmp_path, size=16)[0]["box"].tolist() == [2, 2, 9, 9]
    red = white.copy()
    red[12, 12] = (255, 0, 0)
    Image.fromarray(red).save(tmp_path / "figure_ground" / "x.png")
    with pytest.raises(ValueError, match=r"x\.png is not single-valued per pixel.*1 pixels"):
        MaskFolder(tmp_path, size=16)[0]


def _pair(root: Path, stem: str, photo: tuple[int, int] = (16, 16), mask: tuple[int, int] = (16, 16),
          ext: str = ".png") -> None:
    for sub in ("rgb", "figure_ground"):
        (root / sub).mkdir(exist_ok=True)
    Image.fromarray(_photo(*photo, 0)).save(root / "rgb" / f"{stem}{ext}")
    Image.fromarray(_mask(*mask, (1, 1, 5, 5))).save(root / "figure_ground" / f"{stem}{ext}")


def test_image_without_mask_and_reverse(tmp_path: Path) -> None:
    _pair(tmp_path, "ok")
    Image.fromarray(_photo(16, 16, 1)).save(tmp_path / "rgb" / "lonely.jpg")
    with pytest.raises(ValueError, match=r"image .*lonely\.jpg has no mask"):
        MaskFolder(tmp_path)
    (tmp_path / "rgb" / "lonely.jpg").unlink()
    Image.fromarray(_mask(16, 16, (0, 0, 3, 3))).save(tmp_path / "figure_ground" / "orphan.png")
    with pytest.raises(ValueError, match=r"mask .*orphan\.png has no image"):
        MaskFolder(tmp_path)


def test_unreadable_files(tmp_path: Path) -> None:
    _pair(tmp_path, "ok")
    (tmp_path / "rgb" / "ok.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"not a readable image file: .*rgb.ok\.png"):
        MaskFolder(tmp_path)[0]
    _pair(tmp_path, "ok")
    (tmp_path / "figure_ground" / "ok.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"not a readable image file: .*figure_ground.ok\.png"):
        MaskFolder(tmp_path)[0]


def test_size_mismatch(tmp_path: Path) -> None:
    # 4 % off in shape: accepted (resized to the mask); 25 % off: refused, naming both files.
    _pair(tmp_path, "near", photo=(50, 52), mask=(50, 50))
    assert MaskFolder(tmp_path, size=16)[0]["image"].shape == (3, 16, 16)
    _pair(tmp_path, "near", photo=(16, 20), mask=(16, 16))
    with pytest.raises(ValueError, match=r"image .*near\.png is 20x16 .* mask .*near\.png is 16x16"):
        MaskFolder(tmp_path, size=16)[0]


def test_empty_folder_and_empty_mask(tmp_path: Path) -> None:
    (tmp_path / "rgb").mkdir()
    (tmp_path / "figure_ground").mkdir()
    with pytest.raises(ValueError, match="no images"):
        MaskFolder(tmp_path)
    with pytest.raises(ValueError, match="images folder not found"):
        MaskFolder(tmp_path, images="photos")
    Image.fromarray(_photo(8, 8, 0)).save(tmp_path / "rgb" / "blank.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "figure_ground" / "blank.png")
    with pytest.raises(ValueError, match=r"blank\.png has no object pixel"):
        MaskFolder(tmp_path)[0]


def test_bad_arguments(folder: Path) -> None:
    with pytest.raises(ValueError, match="label"):
        MaskFolder(folder, label=-1)
    with pytest.raises(ValueError, match="threshold"):
        MaskFolder(folder, threshold=300)
    with pytest.raises(ValueError, match="size"):
        MaskFolder(folder, size=0)
    with pytest.raises(ValueError, match="root folder not found"):
        MaskFolder(folder / "nothing")
