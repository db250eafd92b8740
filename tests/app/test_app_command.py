"""``fcam app`` on the command line: the missing extra, option errors, the page's handlers
(bad input becomes a message), binding warnings, and a clean stop on SIGINT with no
temporary file left (also for the no-options default on the demo's cached models)."""

from __future__ import annotations

import logging
import signal
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from app_helpers import AppProcess, write_tiny_models
from PIL import Image

from fcam.cli import main
from fcam.demo import build_classifier, save_classifier


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("fcam: error: ") and "Traceback" not in err
    return err


def test_without_gradio_it_stops_at_once(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    # The classifier file does not exist: the extra is checked before anything is loaded.
    err = _one_line_error(capsys, ["app", "--classifier", str(tmp_path / "missing.pt")])
    assert err == 'fcam: error: the app needs Gradio: pip install "fcam[app]"'
    assert _one_line_error(capsys, ["app"]) == err  # the no-options default does not train


def test_option_errors(capsys: pytest.CaptureFixture[str], tiny_files: tuple[Path, Path],
                       tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    classifier, checkpoint = tiny_files
    err = _one_line_error(capsys, ["app", "--weights", "w.pt"])
    assert "--weights needs --classifier or --model" in err
    err = _one_line_error(capsys, ["app", "--checkpoint", str(checkpoint)])
    assert "--checkpoint needs --classifier or --model" in err
    err = _one_line_error(capsys, ["app", "--classifier", str(classifier),
                                   "--checkpoint", str(tmp_path / "nope.pt")])
    assert "--checkpoint: file not found" in err
    other = tmp_path / "three-classes.pt"
    save_classifier(build_classifier(3), other, arch="resnet18", image_size=64)
    err = _one_line_error(capsys, ["app", "--classifier", str(other), "--checkpoint",
                                   str(checkpoint)])
    assert "--checkpoint: this F-CAM checkpoint does not fit the classifier" in err
    err = _one_line_error(capsys, ["app", "--classifier", str(classifier), "--port", "70000"])
    assert "--port" in err


def test_handlers_turn_bad_input_into_messages(tiny_files: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    from fcam.app.core import load_checkpoint
    from fcam.app.page import AppConfig, _Handlers
    from fcam.models import load_classifier

    classifier, checkpoint = tiny_files
    model, spec = load_classifier(classifier)
    model.requires_grad_(False)
    config = AppConfig(model, spec, fcam=load_checkpoint(checkpoint, model))
    handlers = _Handlers(config, tmp_path)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"GIF89a but not really")
    state, tiles, top5, _, files, status = handlers.explain(str(bad), None, ["gradcam"], 0.5, "s1")
    assert state is None and tiles == [] and files == []
    assert "is not an image Pillow can read" in status and "Traceback" not in status

    image = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8)).save(image)
    state, tiles, top5, target, files, status = handlers.explain(
        str(image), None, ["gradcam"], 0.5, "s1")
    assert status == ""
    assert [caption.split(" · ")[0] for _, caption in tiles] == ["image", "Grad-CAM", "F-CAM"]
    assert len(top5["choices"]) == 5 and top5["value"] == target == state.target
    assert sorted(Path(f).name for f in files) == sorted(
        f"{name}-class{target}.{ext}" for name in ("gradcam", "fcam") for ext in ("png", "npy"))
    for f in files:
        if f.endswith(".npy"):
            array = np.load(f)
            assert array.shape == (50, 70)
            np.testing.assert_array_equal(array, state.full_map(Path(f).name.split("-")[0]))
        else:
            with Image.open(f) as png:
                assert png.size == (70, 50) and png.mode == "L"

    out = handlers.explain(str(image), 9, ["gradcam"], 0.5, "s1")
    assert "class 9 is outside this model's classes: choose 0 to 4" in out[-1]
    assert "does not fit" in handlers.load_checkpoint(str(bad))
    assert config.fcam is not None  # the loaded F-CAM is kept after a bad upload


def test_is_loopback() -> None:
    from fcam.app.page import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_other_hosts_are_warned_about_and_the_folder_goes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path,
    tiny_files: tuple[Path, Path],
) -> None:
    pytest.importorskip("gradio")
    import tempfile

    from fcam.app import page
    from fcam.models import load_classifier

    folders: list[Path] = []

    def refuse(config: object, folder: Path) -> None:
        folders.append(Path(folder))
        raise RuntimeError("stop before binding")

    monkeypatch.setattr(page, "build_page", refuse)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, spec = load_classifier(tiny_files[0])
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="before binding"):
        page.serve(page.AppConfig(model, spec), host="0.0.0.0", port=1)
    assert "the page has no authentication" in caplog.text
    assert folders and folders[0].parent == tmp_path and not folders[0].exists()


@pytest.mark.slow
def test_sigint_stops_cleanly_and_leaves_no_temp_files(
    app_process: type[AppProcess], tmp_path: Path, tiny_files: tuple[Path, Path]
) -> None:
    pytest.importorskip("gradio")
    classifier, checkpoint = tiny_files
    app = app_process(["--classifier", str(classifier), "--checkpoint", str(checkpoint)],
                      tmp_path / "tmp")
    url = app.wait_ready()
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
    assert [p.name[:9] for p in app.tmpdir.iterdir()] == ["fcam-app-"]
    output = app.stop(signal.SIGINT)
    assert app.proc.returncode == 0, output
    assert "fcam app: stopped" in output and "Traceback" not in output
    assert list(app.tmpdir.iterdir()) == []


@pytest.mark.slow
def test_no_options_opens_on_the_demo_cache(app_process: type[AppProcess], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With the demo's files in the cache (tiny stand-ins written at the cache paths), bare
    ``fcam app`` serves them without training."""
    pytest.importorskip("gradio")
    from fcam.demo.cached import APP_CAM, _paths
    from fcam.demo.config import DemoConfig

    cache = tmp_path / "cache"
    monkeypatch.setenv("FCAM_CACHE_DIR", str(cache))
    classifier, checkpoint = _paths(DemoConfig.quick(cams=(APP_CAM,)), APP_CAM)
    write_tiny_models(tmp_path, classifier, checkpoint)
    app = app_process([], tmp_path / "tmp", env={"FCAM_CACHE_DIR": str(cache)})
    url = app.wait_ready()
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
    output = app.stop(signal.SIGTERM)
    assert app.proc.returncode == 0 and "stopped" in output, output
    assert list(app.tmpdir.iterdir()) == []
