"""The ``fcam`` command line: demo end to end, evaluate/explain, and user-error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fcam import FCAM
from fcam.cli import main
from fcam.data import SyntheticWSOL
from fcam.demo import build_classifier, evaluate_localization, load_classifier, save_classifier

SIZE = 64


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fcam: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random classifier, an F-CAM fitted for one epoch on it, and the test split on disk."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = build_classifier(5).eval()
    save_classifier(model, root / "classifier.pt", arch="resnet18", image_size=SIZE)
    train = SyntheticWSOL(8, size=SIZE, seed=1, split="train")
    fc = FCAM(model, target_layer="layer4", cam="cam")
    fc.fit(DataLoader(train, batch_size=4), epochs=1, progress=False)
    fc.save(root / "fcam.pt")
    test = SyntheticWSOL(6, size=SIZE, seed=1, split="test")
    test.write_wsol(root / "masks", kind="masks")
    test.write_wsol(root / "boxes", kind="boxes")
    return {"root": root, "classifier": root / "classifier.pt", "fcam": root / "fcam.pt"}


def _direct_scores(assets: dict[str, Path], use_fcam: bool) -> dict:
    """The same evaluation through the library on the in-memory split."""
    model, _ = load_classifier(assets["classifier"])
    for p in model.parameters():
        p.requires_grad_(False)
    loader = DataLoader(SyntheticWSOL(6, size=SIZE, seed=1, split="test"), batch_size=4)
    if use_fcam:
        fc = FCAM.load(assets["fcam"], model)
        scores = evaluate_localization(lambda x, y: fc.explain(x), model, loader, progress=False)
    else:
        from fcam.cams import create

        with create("gradcampp", model, "layer4") as ext:
            scores = evaluate_localization(
                lambda x, y: ext.explain(x, y, size=x.shape[-2:]), model, loader, progress=False
            )
    return scores.to_dict()


# ---------------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo_quick_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FCAM_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    code, stdout, _ = _run(capsys, "demo", "--quick", "--out", str(out), "--no-progress")
    assert code == 0
    for row in ("CAM", "CAM + F-CAM", "Grad-CAM++", "Grad-CAM++ + F-CAM"):
        assert any(line.startswith(row + " ") for line in stdout.splitlines()), stdout
    results = json.loads((out / "results.json").read_text())["results"]
    assert list(results) == ["CAM", "CAM + F-CAM", "Grad-CAM++", "Grad-CAM++ + F-CAM"]
    for scores in results.values():
        for key in ("pxap", "maxboxacc_v2", "maxboxacc", "top1_loc"):
            assert 0.0 <= scores[key] <= 100.0
    # The point of the demo: F-CAM localises better than the interpolated CAM it learns from.
    assert results["CAM + F-CAM"]["pxap"] > results["CAM"]["pxap"]
    assert results["Grad-CAM++ + F-CAM"]["pxap"] > results["Grad-CAM++"]["pxap"]
    markdown = (out / "results.md").read_text()
    assert "| CAM + F-CAM |" in markdown
    with Image.open(out / "comparison_grid.png") as grid:
        assert grid.width > 6 * 128 and grid.height > 8 * 128
    assert len(list((out / "overlays").glob("*.png"))) == 8 * 4
    model, meta = load_classifier(out / "classifier.pt")
    assert meta["num_classes"] == 5 and meta["image_size"] == 128
    FCAM.load(out / "fcam-gradcampp.pt", model)
    cached = sorted(p.parent.name for p in (tmp_path / "cache").rglob("*.pt"))
    assert cached == ["classifiers", "fcam", "fcam"]

    # A rerun reuses the cached classifier and F-CAMs and reproduces the numbers exactly.
    code, stdout2, _ = _run(capsys, "demo", "--quick", "--out", str(out), "--no-progress")
    assert code == 0
    assert json.loads((out / "results.json").read_text())["results"] == results
    assert stdout2.split("\n\n")[0] == stdout.split("\n\n")[0]


# ------------------------------------------------------------------ evaluate / explain
def test_evaluate_checkpoint_on_mask_layout_matches_library(
    assets: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = assets["root"] / "masks"
    code, stdout, _ = _run(
        capsys,
        "evaluate",
        "--data-root",
        str(data / "images"),
        "--metadata",
        str(data / "metadata" / "test"),
        "--classifier",
        str(assets["classifier"]),
        "--checkpoint",
        str(assets["fcam"]),
        "--size",
        str(SIZE),
        "--no-progress",
        "--out",
        str(tmp_path / "scores.json"),
    )
    assert code == 0
    assert "F-CAM (fcam.pt)" in stdout
    written = json.loads((tmp_path / "scores.json").read_text())
    direct = _direct_scores(assets, use_fcam=True)
    assert written["pxap"] == pytest.approx(direct["pxap"], abs=1e-9)
    assert written["maxboxacc_v2"] is None  # a mask dataset has no boxes
    assert written["classification_acc"] == direct["classification_acc"]


def test_evaluate_cam_on_box_layout_matches_library(
    assets: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = assets["root"] / "boxes"
    code, _, _ = _run(
        capsys,
        "evaluate",
        "--data-root",
        str(data / "images"),
        "--metadata",
        str(data / "metadata" / "test"),
        "--classifier",
        str(assets["classifier"]),
        "--cam",
        "gradcampp",
        "--size",
        str(SIZE),
        "--no-progress",
        "--out",
        str(tmp_path / "scores.json"),
    )
    assert code == 0
    written = json.loads((tmp_path / "scores.json").read_text())
    direct = _direct_scores(assets, use_fcam=False)
    assert written["pxap"] is None
    for key in ("maxboxacc_v2", "maxboxacc", "top1_loc"):
        assert written[key] == pytest.approx(direct[key]), key


def test_explain_writes_overlays(
    assets: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ds = SyntheticWSOL(2, size=96, seed=3, split="val")
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(ds[i]["raw"].permute(1, 2, 0).numpy()).save(paths[-1])
    out = tmp_path / "out"
    code, _, _ = _run(
        capsys,
        "explain",
        *map(str, paths),
        "--classifier",
        str(assets["classifier"]),
        "--checkpoint",
        str(assets["fcam"]),
        "--out",
        str(out),
        "--save-maps",
        "--target",
        "2",
        "--no-progress",
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "img0-class2.npy",
        "img0-class2.png",
        "img1-class2.npy",
        "img1-class2.png",
    ]
    with Image.open(out / "img0-class2.png") as im:
        assert im.size == (SIZE, SIZE)  # the classifier's training size from its checkpoint
    code, _, _ = _run(
        capsys,
        "explain",
        str(paths[0]),
        "--classifier",
        str(assets["classifier"]),
        "--cam",
        "cam",
        "--out",
        str(out / "cam"),
        "--size",
        "80",
    )
    assert code == 0
    (png,) = (out / "cam").glob("img0-class*.png")
    with Image.open(png) as im:
        assert im.size == (80, 80)


# ------------------------------------------------------------------------ errors
def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys)
    assert code == 0 and "demo" in out and "evaluate" in out and "explain" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip().startswith("fcam ")


def test_unknown_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "frobnicate")
    _assert_one_line_error(code, err, "invalid choice", "frobnicate")


def test_bad_cams_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "demo", "--cams", "cam,nosuchcam")
    _assert_one_line_error(code, err, "--cams", "nosuchcam")


def test_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "demo", "--epochs", "0")
    _assert_one_line_error(code, err, "--epochs")
    code, _, err = _run(capsys, "demo", "--seed", "-3")
    _assert_one_line_error(code, err, "--seed")


def test_missing_checkpoints(
    assets: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    code, _, err = _run(
        capsys,
        "explain",
        str(image),
        "--classifier",
        str(assets["classifier"]),
        "--checkpoint",
        str(tmp_path / "nope.pt"),
        "--out",
        str(tmp_path / "o"),
    )
    _assert_one_line_error(code, err, "F-CAM checkpoint not found", "nope.pt")
    code, _, err = _run(
        capsys,
        "explain",
        str(image),
        "--classifier",
        str(tmp_path / "c.pt"),
        "--cam",
        "cam",
        "--out",
        str(tmp_path / "o"),
    )
    _assert_one_line_error(code, err, "classifier checkpoint not found")
    data = assets["root"] / "boxes"
    code, _, err = _run(
        capsys,
        "evaluate",
        "--data-root",
        str(data / "images"),
        "--metadata",
        str(data / "metadata" / "test"),
        "--classifier",
        str(assets["classifier"]),
        "--checkpoint",
        str(tmp_path / "gone.pt"),
    )
    _assert_one_line_error(code, err, "gone.pt")


def test_corrupt_checkpoint_and_bad_target(
    assets: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    code, _, err = _run(
        capsys,
        "explain",
        str(image),
        "--classifier",
        str(assets["classifier"]),
        "--checkpoint",
        str(junk),
        "--out",
        str(tmp_path / "o"),
    )
    _assert_one_line_error(code, err, "junk.pt")
    code, _, err = _run(
        capsys,
        "explain",
        str(image),
        "--classifier",
        str(assets["classifier"]),
        "--cam",
        "cam",
        "--target",
        "9",
        "--out",
        str(tmp_path / "o"),
    )
    _assert_one_line_error(code, err, "--target")


def test_bad_image_paths(
    assets: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(
        capsys,
        "explain",
        str(tmp_path / "missing.jpg"),
        "--classifier",
        str(assets["classifier"]),
        "--cam",
        "cam",
        "--out",
        str(tmp_path),
    )
    _assert_one_line_error(code, err, "image not found", "missing.jpg")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    code, _, err = _run(
        capsys,
        "explain",
        str(text),
        "--classifier",
        str(assets["classifier"]),
        "--cam",
        "cam",
        "--out",
        str(tmp_path),
    )
    _assert_one_line_error(code, err, "not a readable image", "notes.txt")


def test_missing_metadata_folder(
    assets: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(
        capsys,
        "evaluate",
        "--data-root",
        str(tmp_path),
        "--metadata",
        str(tmp_path / "meta"),
        "--classifier",
        str(assets["classifier"]),
        "--cam",
        "cam",
    )
    _assert_one_line_error(code, err, "metadata")


def test_console_entry_point_reports_errors_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fcam",
            "explain",
            str(tmp_path / "none.png"),
            "--classifier",
            str(tmp_path / "c.pt"),
            "--cam",
            "gradcam",
            "--out",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    _assert_one_line_error(proc.returncode, proc.stderr, "image not found")
    assert proc.stdout == ""
