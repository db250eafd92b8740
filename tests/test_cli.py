"""The ``fcam`` command line: demo end to end; evaluate/explain/fit/export with the demo's
classifier file and with any classifier (--model/--weights); file modes; user errors (exit 2,
one line) versus internal errors (exit 1, traceback with -v)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def _direct_scores(assets: dict[str, Path], use_fcam: bool, **fcam_overrides: float) -> dict:
    """The same evaluation through the library on the in-memory split (GT-class maps)."""
    model, _ = load_classifier(assets["classifier"])
    for p in model.parameters():
        p.requires_grad_(False)
    loader = DataLoader(SyntheticWSOL(6, size=SIZE, seed=1, split="test"), batch_size=4)
    if use_fcam:
        fc = FCAM.load(assets["fcam"], model, **fcam_overrides)
        scores = evaluate_localization(lambda x, y: fc.explain(x, y), model, loader, progress=False)
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
    # The HTML report of the same maps: its table is results.json's, its figures exist.
    assert f"report: {out / 'report' / 'index.html'}" in stdout
    page = (out / "report" / "index.html").read_text()
    for label, scores in results.items():
        row = page.split(f"<tr><td>{label}</td>", 1)[1].split("</tr>", 1)[0]
        values = [float(part.split('"')[0]) for part in row.split('data-value="')[1:]]
        assert values == [scores[k] for k in ("pxap", "maxboxacc_v2", "maxboxacc", "top1_loc")]
    assert (out / "report" / "figures" / "threshold_sensitivity.png").is_file()

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


@pytest.mark.parametrize(("flag", "option", "values"), [
    ("--cam-exponent", "cam_exponent", ("0", "1")), ("--cam-mix", "cam_mix", ("0", "0.5")),
])
def test_evaluate_map_options_override_the_checkpoint(
    assets: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path,
    flag: str, option: str, values: tuple[str, str],
) -> None:
    data = assets["root"] / "masks"
    common = ["evaluate", "--data-root", str(data / "images"), "--metadata",
              str(data / "metadata" / "test"), "--classifier", str(assets["classifier"]),
              "--size", str(SIZE), "--no-progress"]  # fmt: skip
    scores = {}
    for value in values:
        out = tmp_path / f"scores-{value}.json"
        code, _, _ = _run(capsys, *common, "--checkpoint", str(assets["fcam"]), flag,
                          value, "--out", str(out))  # fmt: skip
        assert code == 0
        scores[value] = json.loads(out.read_text())["pxap"]
        direct = _direct_scores(assets, use_fcam=True, **{option: float(value)})
        assert scores[value] == pytest.approx(direct["pxap"], abs=1e-9)
    assert scores[values[0]] != pytest.approx(scores[values[1]])  # the option reaches the maps
    code, _, err = _run(capsys, *common, "--cam", "gradcampp", flag, "0")
    _assert_one_line_error(code, err, f"{flag} shape an F-CAM map")
    code, _, err = _run(capsys, *common, "--checkpoint", str(assets["fcam"]), flag, "-1")
    assert code == 2 and ("a number in [0, 1e6]" if option == "cam_exponent" else "a number in [0, 1]") in err


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


def test_evaluate_report_compares_cam_and_checkpoint(
    assets: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--cam and --checkpoint together: one table row each, and a report comparing the two
    whose numbers are the command's own (and the library's)."""
    pytest.importorskip("matplotlib")
    import hashlib
    from html.parser import HTMLParser

    data = assets["root"] / "boxes"
    code, stdout, _ = _run(
        capsys, "evaluate", "--data-root", str(data / "images"), "--metadata",
        str(data / "metadata" / "test"), "--classifier", str(assets["classifier"]),
        "--cam", "gradcampp", "--checkpoint", str(assets["fcam"]), "--size", str(SIZE),
        "--no-progress", "--out", str(tmp_path / "scores.json"), "--report", str(tmp_path / "rep"),
    )  # fmt: skip
    assert code == 0
    assert "gradcampp (interpolated)" in stdout and "F-CAM (fcam.pt)" in stdout
    assert f"wrote {tmp_path / 'rep' / 'index.html'}" in stdout
    results = json.loads((tmp_path / "scores.json").read_text())["results"]
    direct = {"gradcampp (interpolated)": _direct_scores(assets, use_fcam=False),
              "F-CAM (fcam.pt)": _direct_scores(assets, use_fcam=True)}

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[str]] = []
            self.meta: dict[str, str] = {}
            self.table = ""
            self.images: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "table":
                self.table = a.get("id") or ""
            if tag == "tr":
                self.rows.append([])
            if tag == "td" and self.table == "metrics" and self.rows[-1]:
                self.rows[-1].append(a.get("data-value") or "n/a")  # a value cell
            if tag == "img":
                self.images.append(a["src"] or "")

        def handle_data(self, text: str) -> None:
            # The label cell of a metrics row, and both cells of a meta row, are text.
            if (self.table in ("metrics", "meta") and self.lasttag == "td" and text.strip()
                    and (self.table == "meta" or not self.rows[-1])):
                self.rows[-1].append(text)

    page = Cells()
    page.feed((tmp_path / "rep" / "index.html").read_text())
    metrics = {r[0]: r[1:] for r in page.rows if len(r) == 5}
    assert list(metrics) == ["gradcampp (interpolated)", "F-CAM (fcam.pt)"]
    for label, cells in metrics.items():
        for cell, key in zip(cells, ("pxap", "maxboxacc_v2", "maxboxacc", "top1_loc"), strict=True):
            expected = results[label][key]
            assert (cell == "n/a") if expected is None else float(cell) == expected, (label, key)
            if expected is not None:
                assert expected == pytest.approx(direct[label][key]), (label, key)
    meta = {r[0]: r[1] for r in page.rows if len(r) == 2}
    digest = hashlib.sha256(assets["fcam"].read_bytes()).hexdigest()
    assert meta["checkpoint sha256"] == digest and meta["layer"] == "layer4"
    for src in page.images:
        assert (tmp_path / "rep" / src).is_file()
    assert (tmp_path / "rep" / "figures" / "threshold_sensitivity.png").is_file()


def test_evaluate_report_without_matplotlib_stops_at_once(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    data = assets["root"] / "boxes"
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from fcam.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run(
        [sys.executable, "-c", code, "evaluate", "--data-root", str(data / "images"),
         "--metadata", str(data / "metadata" / "test"), "--classifier", str(assets["classifier"]),
         "--cam", "gradcampp", "--report", str(tmp_path / "rep")],
        check=False, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    _assert_one_line_error(proc.returncode, proc.stderr, 'pip install "fcam[report]"')
    assert proc.stdout == "" and not (tmp_path / "rep").exists()


def test_evaluate_needs_a_map_producer(
    assets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = assets["root"] / "boxes"
    code, _, err = _run(capsys, "evaluate", "--data-root", str(data / "images"), "--metadata",
                        str(data / "metadata" / "test"), "--classifier", str(assets["classifier"]))
    _assert_one_line_error(code, err, "--cam NAME, --checkpoint FILE, or both")


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


def test_lr_schedule_choices_are_fits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from fcam.commands.fit import CLI_LR_SCHEDULES
    from fcam.explainer.trainer import LR_SCHEDULES

    assert CLI_LR_SCHEDULES == LR_SCHEDULES
    code, _, err = _run(capsys, "fit", "--data-root", str(tmp_path),
                        "--out", str(tmp_path / "f.pt"), "--lr-schedule", "step")
    _assert_one_line_error(code, err, "--lr-schedule", "step")


def test_colour_options_out_of_range_are_one_line_errors(
    assets: dict[str, Path], folder: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "fit", "--data-root", str(folder), "--classifier",
                        str(assets["classifier"]), "--out", str(tmp_path / "f.pt"),
                        "--colour-bins", "65", "--no-progress")
    _assert_one_line_error(code, err, "colour_bins")
    assert not (tmp_path / "f.pt").exists()

    from fcam.commands.fit import CLI_COLOUR_MODES
    from fcam.losses.seeds import COLOUR_MODES

    assert CLI_COLOUR_MODES == COLOUR_MODES
    code, _, err = _run(capsys, "fit", "--data-root", str(tmp_path),
                        "--out", str(tmp_path / "f.pt"), "--colour-mode", "soft")
    _assert_one_line_error(code, err, "--colour-mode", "soft")


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


# ------------------------------------------------------------ any classifier (--model)
class _Broken(torch.nn.Module):
    """A classifier with a bug in its forward (for the internal-error path)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return {"no": self.conv(x)}["logits"]


def broken_model() -> torch.nn.Module:
    """Built by the CLI through ``--model test_cli:broken_model``."""
    return _Broken()


@pytest.fixture(scope="module")
def folder(assets: dict[str, Path]) -> Path:
    """A tiny ImageFolder: two class folders of three synthetic images each."""
    root = assets["root"] / "folder"
    ds = SyntheticWSOL(6, size=SIZE, seed=5, split="train")
    for i in range(6):
        sub = root / ("a" if i < 3 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds[i]["raw"].permute(1, 2, 0).numpy()).save(sub / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def weights(assets: dict[str, Path]) -> Path:
    """The classifier's weights as a DDP training checkpoint (module. prefixes, extra keys)."""
    model, _ = load_classifier(assets["classifier"])
    path = assets["root"] / "ddp-checkpoint.pth"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": state}, path)
    return path


def _model_args(weights: Path) -> list[str]:
    return ["--model", "resnet18", "--weights", str(weights), "--target-layer", "layer4",
            "--size", str(SIZE), "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]


def test_evaluate_with_model_and_weights_matches_classifier_file(
    assets: dict[str, Path], weights: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = assets["root"] / "boxes"
    common = ["evaluate", "--data-root", str(data / "images"), "--metadata",
              str(data / "metadata" / "test"), "--checkpoint", str(assets["fcam"]), "--no-progress"]
    code, _, err = _run(capsys, *common, *_model_args(weights), "--out", str(tmp_path / "a.json"))
    assert code == 0, err
    code, _, err = _run(capsys, *common, "--classifier", str(assets["classifier"]),
                        "--out", str(tmp_path / "b.json"))
    assert code == 0, err
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert a["classifier"]["model"] == "resnet18" and a["classifier"]["num_classes"] == 5
    for key in ("maxboxacc_v2", "maxboxacc", "top1_loc", "classification_acc"):
        assert a[key] == b[key], key


def test_explain_with_model_weights_and_cam(
    weights: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = tmp_path / "x.png"
    Image.fromarray(SyntheticWSOL(1, size=80, seed=2)[0]["raw"].permute(1, 2, 0).numpy()).save(image)
    code, stdout, err = _run(capsys, "explain", str(image), *_model_args(weights), "--cam",
                             "gradcampp", "--target", "1", "--save-maps", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "class 1" in stdout
    heat = np.load(tmp_path / "o" / "x-class1.npy")
    assert heat.shape == (SIZE, SIZE) and 0.0 <= heat.min() and heat.max() <= 1.0


# ------------------------------------------------------------------------------ fit
@pytest.mark.slow
def test_fit_on_image_folder_with_checkpoints_and_resume(
    assets: dict[str, Path], folder: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "fcam-folder.pt"
    argv = ["fit", "--data-root", str(folder), "--classifier", str(assets["classifier"]),
            "--cam", "cam", "--batch-size", "3", "--out", str(out), "--no-progress",
            "--lr-schedule", "cosine"]
    code, stdout, err = _run(capsys, *argv, "--epochs", "1")
    assert code == 0, err
    assert f"wrote {out}" in stdout
    assert (tmp_path / "fcam-folder-checkpoints" / "fcam-last.pt").is_file()
    model, _ = load_classifier(assets["classifier"])
    fc = FCAM.load(out, model)
    assert len(fc.history) == 1
    maps = fc.explain(torch.randn(1, 3, SIZE, SIZE))
    assert maps.shape == (1, SIZE, SIZE)
    # --resume continues from the per-epoch checkpoint: one more epoch, not two.
    code, stdout, err = _run(capsys, *argv, "--epochs", "2", "--resume")
    assert code == 0, err
    assert "epoch 2/2" in stdout
    # Epoch 2 of 2 on the cosine schedule: 0.03 * (1 + cos(pi / 2)) / 2.
    assert [h["lr"] for h in FCAM.load(out, model).history] == pytest.approx([0.03, 0.015])
    # Resuming a finished run only rewrites the output.
    out.unlink()
    code, _, err = _run(capsys, *argv, "--epochs", "2", "--resume")
    assert code == 0, err
    assert len(FCAM.load(out, model).history) == 2


def test_fit_on_wsol_layout_with_model_weights(
    assets: dict[str, Path], weights: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = assets["root"] / "masks"
    out = tmp_path / "f.pt"
    code, _, err = _run(capsys, "fit", "--data-root", str(data / "images"), "--metadata",
                        str(data / "metadata" / "test"), *_model_args(weights), "--cam", "gradcam",
                        "--epochs", "1", "--batch-size", "3", "--use-predictions",
                        "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(out),
                        "--no-progress", "--no-class-head", "--colour-bins", "4",
                        "--colour-mode", "filter", "--cam-mix", "0.25")
    assert code == 0, err
    model, _ = load_classifier(assets["classifier"])
    loaded = FCAM.load(out, model)
    assert "cam=gradcam" in repr(loaded)
    assert loaded.config.seeds.colour_bins == 4 and loaded.config.seeds.colour_mode == "filter"
    assert loaded.config.cam_mix == 0.25
    assert loaded.config.class_head is False and isinstance(loaded.decoder.seg_head, torch.nn.Conv2d)
    assert (tmp_path / "ck" / "fcam-last.pt").is_file()


# ---------------------------------------------------------------------------- export
def test_export_npy_and_png_with_resume(
    assets: dict[str, Path], folder: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "maps"
    argv = ["export", "--data-root", str(folder), "--classifier", str(assets["classifier"]),
            "--checkpoint", str(assets["fcam"]), "--format", "npy,png", "--batch-size", "4",
            "--out", str(out), "--no-progress"]
    code, stdout, err = _run(capsys, *argv)
    assert code == 0, err
    assert "exported 6 images" in stdout
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted(f"{c}/im{i}.png.{ext}" for c, idx in (("a", range(3)), ("b", range(3, 6)))
                           for i in idx for ext in ("npy", "png"))
    first = np.load(out / "a" / "im0.png.npy")
    assert first.shape == (SIZE, SIZE) and first.dtype == np.float32
    with Image.open(out / "a" / "im0.png.png") as png:
        assert png.mode == "L" and png.size == (SIZE, SIZE)
        assert np.abs(np.asarray(png) / 255.0 - first).max() <= 0.5 / 255 + 1e-6
    # The same maps as the library gives.
    model, _ = load_classifier(assets["classifier"])
    fc = FCAM.load(assets["fcam"], model)
    with Image.open(folder / "a" / "im0.png") as im:
        raw = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    np.testing.assert_allclose(fc.explain(((raw - mean) / std)[None])[0].numpy(), first, atol=1e-5)
    # Resume: nothing to do; a deleted file is rewritten, the others are left alone.
    kept = (out / "b" / "im4.png.npy").stat().st_mtime_ns
    code, stdout, _ = _run(capsys, *argv)
    assert code == 0 and "exported 0 images" in stdout and "(6 already there)" in stdout
    (out / "a" / "im1.png.png").unlink()
    code, stdout, _ = _run(capsys, *argv)
    assert code == 0 and "exported 1 images" in stdout
    assert (out / "a" / "im1.png.png").is_file()
    assert (out / "b" / "im4.png.npy").stat().st_mtime_ns == kept


def test_export_cam_maps_evaluate_like_the_library(
    assets: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from fcam.metrics import evaluate_scoremap_dir

    data = assets["root"] / "boxes"
    meta = data / "metadata" / "test"
    code, _, err = _run(capsys, "export", "--data-root", str(data / "images"), "--metadata",
                        str(meta), "--classifier", str(assets["classifier"]), "--cam", "gradcampp",
                        "--target", "label", "--out", str(tmp_path / "maps"), "--no-progress")
    assert code == 0, err
    from_files = evaluate_scoremap_dir(tmp_path / "maps", meta, size=SIZE)
    direct = _direct_scores(assets, use_fcam=False)
    assert from_files.value == pytest.approx(direct["maxboxacc_v2"])


# ------------------------------------------------------- file modes and error kinds
def test_written_files_are_readable_by_others(
    assets: dict[str, Path], folder: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    old = os.umask(0o022)
    try:
        data = assets["root"] / "boxes"
        assert _run(capsys, "evaluate", "--data-root", str(data / "images"), "--metadata",
                    str(data / "metadata" / "test"), "--classifier", str(assets["classifier"]),
                    "--cam", "cam", "--no-progress", "--out", str(tmp_path / "s.json"))[0] == 0
        assert _run(capsys, "explain", str(folder / "a" / "im0.png"), "--classifier",
                    str(assets["classifier"]), "--cam", "cam", "--save-maps",
                    "--out", str(tmp_path / "ex"))[0] == 0
        assert _run(capsys, "export", "--data-root", str(folder), "--classifier",
                    str(assets["classifier"]), "--cam", "cam", "--format", "npy,png",
                    "--out", str(tmp_path / "maps"), "--no-progress")[0] == 0
        assert _run(capsys, "fit", "--data-root", str(folder), "--classifier",
                    str(assets["classifier"]), "--cam", "cam", "--epochs", "1",
                    "--batch-size", "3", "--out", str(tmp_path / "fit" / "f.pt"),
                    "--no-progress")[0] == 0
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    suffixes = {p.suffix for p in files}
    assert {".json", ".png", ".npy", ".pt"} <= suffixes
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o644"}, modes


def test_user_errors_of_the_classifier_options(
    assets: dict[str, Path], weights: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    base = ["explain", str(image), "--cam", "cam", "--out", str(tmp_path / "o")]
    code, _, err = _run(capsys, *base, "--model", "resnet5")
    _assert_one_line_error(code, err, "--model", "resnet50")
    code, _, err = _run(capsys, *base, "--model", "resnet34", "--weights", str(weights))
    _assert_one_line_error(code, err, "--weights", "do not fit")
    code, _, err = _run(capsys, *base, "--model", "resnet18", "--weights", str(tmp_path / "w.pt"))
    _assert_one_line_error(code, err, "not found", "w.pt")
    code, _, err = _run(capsys, *base, "--classifier", str(weights))
    _assert_one_line_error(code, err, "--model NAME --weights")
    code, _, err = _run(capsys, *base, "--classifier", str(assets["classifier"]), "--weights",
                        str(weights))
    _assert_one_line_error(code, err, "--weights goes with --model")
    code, _, err = _run(capsys, *base, *_model_args(weights)[:-4], "--mean", "0.5,0.5",
                        "--std", "0.2,0.2")
    _assert_one_line_error(code, err, "--mean/--std", "3 values")
    code, _, err = _run(capsys, *base, "--classifier", str(assets["classifier"]),
                        "--target-layer", "layer9")
    _assert_one_line_error(code, err, "--target-layer", "layer9")
    code, _, err = _run(capsys, *base, "--classifier", str(assets["classifier"]), "--mean", "a,b")
    _assert_one_line_error(code, err, "--mean")
    code, _, err = _run(capsys, "export", "--data-root", str(tmp_path / "none"), "--classifier",
                        str(assets["classifier"]), "--cam", "cam", "--out", str(tmp_path / "m"),
                        "--format", "npy,jpg")
    _assert_one_line_error(code, err, "--format", "jpg")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run(capsys, "fit", "--data-root", str(empty), "--classifier",
                        str(assets["classifier"]), "--out", str(tmp_path / "f.pt"))
    _assert_one_line_error(code, err, "--data-root")


def test_internal_errors_show_the_traceback_with_verbose(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    argv = ["explain", str(image), "--model", "test_cli:broken_model", "--cam", "gradcam",
            "--target-layer", "conv", "--size", "16", "--out", str(tmp_path / "o")]
    code, _, err = _run(capsys, *argv)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("fcam: internal error: KeyError") and "-v" in err
    code, _, err = _run(capsys, *argv, "-v")
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert "in forward" in err and "KeyError: 'logits'" in err


# ------------------------------------------------------------------------------ bounds
@pytest.mark.parametrize(
    ("option", "value"),
    [("--size", "100000"), ("--size", "0"), ("--batch-size", "5000"), ("--num-classes", "-1")],
)
def test_numeric_options_are_bounded(
    option: str, value: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["export", "--data-root", str(tmp_path), "--model", "resnet18", "--out", str(tmp_path)]
    code, _, err = _run(capsys, *argv, option, value)
    _assert_one_line_error(code, err, option, "expected an integer in [")
    assert code == 2


class _Hungry(torch.nn.Module):
    """A classifier whose forward runs out of memory."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, num_classes, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise MemoryError


def test_out_of_memory_is_one_line_naming_the_sizes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hungry_models.py").write_text(
        "from test_cli import _Hungry\n\ndef build(num_classes=3):\n    return _Hungry(num_classes)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(image)
    code, _, err = _run(capsys, "explain", str(image), "--model", "hungry_models:build",
                        "--num-classes", "3", "--target-layer", "conv", "--cam", "gradcam",
                        "--size", "64", "--out", str(tmp_path / "o"))  # fmt: skip
    _assert_one_line_error(code, err, "out of memory", "--size 64")
    assert code == 2


# ------------------------------------------------------------------ grey classifiers
def grey_net(num_classes: int = 2) -> torch.nn.Module:
    """A 1-channel classifier, built by the CLI through ``--model test_cli:grey_net``."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, num_classes),
    ).eval()  # fmt: skip


def test_fit_and_explain_a_grey_classifier(
    folder: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    weights = tmp_path / "grey.pt"
    torch.save(grey_net().state_dict(), weights)
    spec = ["--model", "test_cli:grey_net", "--num-classes", "2", "--weights", str(weights),
            "--target-layer", "4", "--size", str(SIZE), "--mean", "0.5", "--std", "0.25"]
    out = tmp_path / "grey-fcam.pt"
    code, _, err = _run(capsys, "fit", "--data-root", str(folder), *spec, "--epochs", "1",
                        "--batch-size", "3", "--out", str(out), "--no-progress")
    assert code == 0, err
    image = next(folder.glob("a/*.png"))
    code, _, err = _run(capsys, "explain", str(image), *spec, "--checkpoint", str(out),
                             "--target", "0", "--save-maps", "--out", str(tmp_path / "o"))
    assert code == 0, err
    heat = np.load(tmp_path / "o" / f"{image.stem}-class0.npy")
    # The library on the same file: the luma of the resized RGB image, normalised.
    fc = FCAM.load(out, grey_net())
    raw = torch.from_numpy(np.array(Image.open(image).convert("RGB").resize((SIZE, SIZE)))).permute(2, 0, 1)
    grey = (raw.float() / 255 * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)
    expected = fc.explain(((grey - 0.5) / 0.25)[None, None], targets=[0])[0]
    np.testing.assert_allclose(heat, expected.numpy(), atol=1e-5)
    assert (tmp_path / "o" / f"{image.stem}-class0.png").is_file()
