"""The command line on a folder of photographs with figure/ground masks (--mask-dir):
``fcam evaluate`` reports what fcam.metrics gives on the same maps; ``fcam fit`` selects epochs
on a validation pair; user errors name the option and the file in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcam import FCAM
from fcam.cams import create
from fcam.cli import main
from fcam.data import MaskFolder, SyntheticWSOL
from fcam.demo import build_classifier, load_classifier, save_classifier
from fcam.metrics import maxboxacc, pxap

SIZE = 64


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Six synthetic photographs (JPEG, 1.5x their masks) with PNG masks, and a classifier."""
    root = tmp_path_factory.mktemp("maskdir")
    (root / "rgb").mkdir()
    (root / "fg").mkdir()
    for i, item in enumerate(SyntheticWSOL(6, size=SIZE, seed=3, split="test")):
        raw = Image.fromarray(item["raw"].permute(1, 2, 0).numpy())
        raw.resize((96, 96), Image.Resampling.BILINEAR).save(root / "rgb" / f"p{i}.jpg", quality=95)
        Image.fromarray(item["mask"].numpy().astype(np.uint8) * 255).save(root / "fg" / f"p{i}.png")
    torch.manual_seed(0)
    save_classifier(build_classifier(5).eval(), root / "classifier.pt", arch="resnet18",
                    image_size=SIZE)
    return {"root": root, "rgb": root / "rgb", "fg": root / "fg", "classifier": root / "classifier.pt"}


def _library_maps(photos: dict[str, Path], targets: list[int] | None) -> tuple[torch.Tensor, ...]:
    model, _ = load_classifier(photos["classifier"])
    model.requires_grad_(False)
    ds = MaskFolder(photos["root"], images="rgb", masks="fg", size=SIZE)
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    if targets is None:
        with torch.no_grad():
            targets = model(images).argmax(1).tolist()
    with create("gradcampp", model, "layer4") as extractor:
        maps = extractor.explain(images, targets, size=images.shape[-2:])
    masks = torch.stack([ds[i]["mask"] for i in range(len(ds))])
    boxes = torch.stack([ds[i]["box"] for i in range(len(ds))])
    return maps, masks, boxes


@pytest.mark.parametrize("label", [2, None])
def test_evaluate_on_mask_folder_matches_metrics(
    photos: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path, label: int | None
) -> None:
    out = tmp_path / "scores.json"
    argv = ["evaluate", "--data-root", str(photos["rgb"]), "--mask-dir", str(photos["fg"]),
            "--classifier", str(photos["classifier"]), "--cam", "gradcampp",
            "--batch-size", "4", "--no-progress", "--out", str(out)]
    code, stdout, err = _run(capsys, *argv, *(["--label", str(label)] if label is not None else []))
    assert code == 0, err
    assert "gradcampp (interpolated)" in stdout
    written = json.loads(out.read_text())
    maps, masks, boxes = _library_maps(photos, None if label is None else [label] * 6)
    assert written["num_images"] == 6
    assert written["pxap"] == pytest.approx(pxap(maps, masks), abs=1e-9)
    box_list = [b[None].numpy() for b in boxes]
    assert written["maxboxacc_v2"] == pytest.approx(maxboxacc(maps, box_list, version=2), abs=1e-9)
    assert written["maxboxacc"] == pytest.approx(maxboxacc(maps, box_list, version=1), abs=1e-9)
    assert written["dataset"] == str(photos["fg"])


def test_fit_selects_epochs_on_a_validation_pair(
    photos: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "f.pt"
    code, stdout, err = _run(
        capsys, "fit", "--data-root", str(photos["rgb"]), "--mask-dir", str(photos["fg"]),
        "--val-data-root", str(photos["rgb"]), "--val-mask-dir", str(photos["fg"]),
        "--label", "1", "--classifier", str(photos["classifier"]), "--epochs", "2",
        "--batch-size", "3", "--out", str(out), "--no-progress")
    assert code == 0, err
    assert "kept epoch" in stdout
    model, _ = load_classifier(photos["classifier"])
    history = FCAM.load(out, model).history
    assert len(history) == 2 and all("val_pxap" in h for h in history)
    best = max(range(2), key=lambda e: history[e]["val_pxap"])
    assert f"kept epoch {best + 1} (validation PxAP {history[best]['val_pxap']:.1f})" in stdout


def _one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcam: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_mask_folder_user_errors(
    photos: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ["evaluate", "--classifier", str(photos["classifier"]), "--cam", "cam", "--no-progress"]
    code, _, err = _run(capsys, *base, "--data-root", str(photos["rgb"]))
    _one_line(code, err, "--metadata", "--mask-dir")
    code, _, err = _run(capsys, *base, "--data-root", str(photos["rgb"]), "--mask-dir",
                        str(photos["fg"]), "--metadata", str(tmp_path))
    _one_line(code, err, "two layouts")
    # An image without a mask, named.
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    for path in photos["rgb"].iterdir():
        (rgb / path.name).write_bytes(path.read_bytes())
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb / "extra.png")
    code, _, err = _run(capsys, *base, "--data-root", str(rgb), "--mask-dir", str(photos["fg"]))
    _one_line(code, err, "--mask-dir", "extra.png has no mask")
    # An unreadable mask, named when the loader reaches it.
    (rgb / "extra.png").unlink()
    fg = tmp_path / "fg"
    fg.mkdir()
    for path in photos["fg"].iterdir():
        (fg / path.name).write_bytes(path.read_bytes())
    (fg / "p3.png").write_bytes(b"garbage")
    code, _, err = _run(capsys, *base, "--data-root", str(rgb), "--mask-dir", str(fg))
    _one_line(code, err, "--mask-dir", "p3.png")
    code, _, err = _run(capsys, "fit", "--classifier", str(photos["classifier"]), "--data-root",
                        str(rgb), "--val-data-root", str(rgb), "--out", str(tmp_path / "x.pt"))
    _one_line(code, err, "--val-mask-dir")
    code, _, err = _run(capsys, *base, "--data-root", str(rgb), "--metadata", str(tmp_path),
                        "--label", "3")
    _one_line(code, err, "--label goes with --mask-dir")
