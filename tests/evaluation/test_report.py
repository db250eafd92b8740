"""fcam.evaluation.write_report on tiny generated data: files, valid HTML, the same numbers as
fcam.evaluation, the galleries' order against brute force, a missing matplotlib, and the page in
a real browser (headless Chromium through Selenium)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("matplotlib", reason='the report needs matplotlib (pip install "fcam[report]")')

from fcam.evaluation import COLUMNS, evaluate_localization, write_report
from fcam.evaluation.figures import plateau
from fcam.metrics import box_iou, boxes_at_thresholds, cam_thresholds

N, SIZE, INTERVAL = 10, 48, 0.01
VOID = {"img", "meta", "br", "hr", "input", "link"}


def _blob(centre: tuple[float, float], sigma: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    return torch.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    """Objects (rectangles) at known places; a CAM-like blob that drifts further off each image
    and a sharp, nearly binary map: distinct per-image IoUs, so the gallery order is defined."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(N, 3, SIZE, SIZE, generator=gen) * 0.3
    masks = torch.zeros(N, SIZE, SIZE)
    boxes, blobs, sharp = [], [], []
    for i in range(N):
        x0, y0 = 6 + i, 8 + (i % 4)
        x1, y1 = x0 + 14 + (i % 3) * 3, y0 + 16
        masks[i, y0:y1 + 1, x0:x1 + 1] = 1
        images[i, 0, y0:y1 + 1, x0:x1 + 1] += 0.6
        boxes.append(torch.tensor([[x0, y0, x1, y1]]))
        blobs.append(_blob(((x0 + x1) / 2 + 1.3 * i, (y0 + y1) / 2), 5.0 + 0.3 * i))
        soft = F.avg_pool2d(masks[i][None, None], 5, 1, 2)[0, 0]
        sharp.append((0.9 * soft + 0.05 * blobs[-1]).clamp(0, 1))
    labels = torch.arange(N) % 3
    logits = torch.randn(N, 3, generator=gen)
    maps = {"CAM": torch.stack(blobs), "F-CAM": torch.stack(sharp)}
    return {"images": images, "masks": masks, "boxes": boxes, "maps": maps, "labels": labels,
            "logits": logits}


@pytest.fixture(scope="module")
def report(data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    return write_report(out, data["images"], masks=data["masks"], boxes=data["boxes"],
                        maps=data["maps"], title="tiny <report>", meta={"model": "hand-made"},
                        labels=data["labels"], logits=data["logits"], gallery_size=4,
                        cam_curve_interval=INTERVAL)


class _Page(HTMLParser):
    """Checks that every element is closed in order and collects what the tests read."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.cells: dict[str, list[list[dict[str, Any]]]] = {}
        self.galleries: dict[str, list[dict[str, str]]] = {}
        self._table: str | None = None
        self._gallery: str | None = None
        self._cell: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "img":
            self.images.append(a["src"])
        elif tag == "table":
            self._table = a.get("id", "")
            self.cells[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.cells[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = {"text": "", **a}
            self.cells[self._table][-1].append(self._cell)
        elif tag == "div" and "gallery" in a.get("class", ""):
            self._gallery = a["id"]
            self.galleries[self._gallery] = []
        elif tag == "figure" and self._gallery is not None:
            self.galleries[self._gallery].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if tag == "table":
            self._table = None
        elif tag == "div":
            self._gallery = None
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, text: str) -> None:
        if self._cell is not None:
            self._cell["text"] += text


def _parse(index: Path) -> _Page:
    page = _Page()
    page.feed(index.read_text(encoding="utf-8"))
    page.close()
    assert page.errors == [] and page.stack == [], (page.errors, page.stack)
    return page


def _library_scores(data: dict[str, Any], label: str, sweeps: bool = False) -> Any:
    maps = data["maps"][label]
    batches = [{"image": data["images"][i:i + 4], "label": data["labels"][i:i + 4],
                "boxes": data["boxes"][i:i + 4], "mask": data["masks"][i:i + 4]}
               for i in range(0, N, 4)]
    it = iter(range(0, N, 4))

    def map_fn(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        start = next(it)
        return maps[start:start + images.shape[0]]

    class Fixed(torch.nn.Module):  # the recorded logits, batch by batch
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.pos = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = data["logits"][self.pos:self.pos + x.shape[0]]
            self.pos += x.shape[0]
            return out

    return evaluate_localization(map_fn, Fixed(), batches, cam_curve_interval=INTERVAL,
                                 progress=False, return_sweeps=sweeps)


def test_files_exist_and_html_is_valid(report: Path) -> None:
    assert report.name == "index.html"
    page = _parse(report)
    assert len(page.images) == 2 + 2 * 2 * 4  # two figures, two galleries per producer
    for src in page.images:
        assert (report.parent / src).is_file(), src
    assert (report.parent / "report.json").is_file()
    assert "tiny &lt;report&gt;" in report.read_text()  # the title is escaped
    meta = {row[0]["text"]: row[1]["text"] for row in page.cells["meta"]}
    assert meta["model"] == "hand-made" and meta["fcam"] and meta["date"].endswith("UTC")


def test_table_numbers_equal_the_library(report: Path, data: dict[str, Any]) -> None:
    page = _parse(report)
    rows = page.cells["metrics"]
    assert [c["text"] for c in rows[0]][1:] == [name for name, _ in COLUMNS]
    assert [r[0]["text"] for r in rows[1:]] == ["CAM", "F-CAM"]
    values = {}
    for row in rows[1:]:
        scores = _library_scores(data, row[0]["text"])
        for cell, (_, attr) in zip(row[1:], COLUMNS, strict=True):
            expected = getattr(scores, attr)
            assert float(cell["data-value"]) == expected, (row[0]["text"], attr)
            assert cell["text"] == f"{expected:.2f}"
            values[row[0]["text"], attr] = expected
    # The data discriminate: the sharp map beats the drifting blob on every metric.
    assert values["F-CAM", "pxap"] > values["CAM", "pxap"] + 10
    assert values["F-CAM", "maxboxacc_v2"] > values["CAM", "maxboxacc_v2"]


def _brute_best_iou(scoremap: torch.Tensor, gt: torch.Tensor) -> float:
    return max(
        float(box_iou(boxes, gt.numpy()).max())
        for boxes in boxes_at_thresholds(scoremap.numpy(), cam_thresholds(INTERVAL), True)
    )


def test_galleries_show_the_worst_and_best_images_in_order(
    report: Path, data: dict[str, Any]
) -> None:
    page = _parse(report)
    for p, label in enumerate(["CAM", "F-CAM"]):
        ious = np.array([_brute_best_iou(data["maps"][label][i], data["boxes"][i])
                         for i in range(N)])
        order = np.argsort(ious, kind="stable")
        worst = [int(f["data-index"]) for f in page.galleries[f"failures-{p}"]]
        best = [int(f["data-index"]) for f in page.galleries[f"best-{p}"]]
        assert worst == order[:4].tolist(), label
        assert best == order[::-1][:4].tolist(), label
        shown = [float(f["data-iou"]) for f in page.galleries[f"failures-{p}"]]
        np.testing.assert_allclose(shown, ious[order[:4]], atol=1e-12)
    cam_ious = [float(f["data-iou"]) for f in page.galleries["failures-0"]]
    assert len(set(cam_ious)) == 4  # distinct values: the order is meaningful


def test_plateaus_are_read_off_the_box_curves(report: Path, data: dict[str, Any]) -> None:
    import json

    found = json.loads((report.parent / "report.json").read_text())["plateaus"]
    assert set(found) == {"CAM", "F-CAM"}
    for label, per_iou in found.items():
        sweeps = _library_scores(data, label, sweeps=True)
        for iou, p in per_iou.items():
            curve = sweeps.box_v2.curves[int(iou)]
            assert (p["lo"], p["hi"]) == plateau(sweeps.box_v2.thresholds, curve)
            assert p["best"] == float(curve.max())
            assert p["lo"] <= p["best_tau"] <= p["hi"]
            assert p["width"] == pytest.approx(p["hi"] - p["lo"])
    # The near-binary map is flat over a wider range of thresholds than the drifting blob.
    assert found["F-CAM"]["50"]["width"] > found["CAM"]["50"]["width"] + 0.3
    assert plateau(np.linspace(0, 1, 5), np.array([0, 96, 100, 95.5, 20.0])) == (0.25, 0.75)


def test_bad_arguments(data: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ground truth"):
        write_report(tmp_path, data["images"], maps=data["maps"])
    with pytest.raises(ValueError, match="maps"):
        write_report(tmp_path, data["images"], boxes=data["boxes"], maps={})
    with pytest.raises(ValueError, match="maps\\['CAM'\\]"):
        write_report(tmp_path, data["images"], boxes=data["boxes"],
                     maps={"CAM": data["maps"]["CAM"][:, :10]})
    with pytest.raises(ValueError, match="maps\\['F-CAM'\\] contains NaN"):
        write_report(tmp_path, data["images"], boxes=data["boxes"],
                     maps={"F-CAM": data["maps"]["F-CAM"] * float("nan")})
    with pytest.raises(ValueError, match="maps\\['CAM'\\] must lie in \\[0, 1\\]"):
        write_report(tmp_path, data["images"], boxes=data["boxes"],
                     maps={"CAM": data["maps"]["CAM"] * 3})
    with pytest.raises(ValueError, match="labels and logits"):
        write_report(tmp_path, data["images"], boxes=data["boxes"], maps=data["maps"],
                     labels=data["labels"])
    with pytest.raises(TypeError, match="images"):
        write_report(tmp_path, data["images"].numpy(), boxes=data["boxes"], maps=data["maps"])


def test_masks_only_rank_by_mask_iou(data: dict[str, Any], tmp_path: Path) -> None:
    index = write_report(tmp_path, data["images"], masks=data["masks"], maps=data["maps"],
                         gallery_size=3, cam_curve_interval=INTERVAL)
    page = _parse(index)
    assert not (tmp_path / "figures" / "threshold_sensitivity.png").exists()
    assert (tmp_path / "figures" / "precision_recall.png").is_file()
    ious = [float(f["data-iou"]) for f in page.galleries["failures-1"]]
    assert ious == sorted(ious)
    assert page.cells["metrics"][1][2]["text"] == "n/a"  # no boxes: no MaxBoxAccV2


def test_missing_matplotlib_is_a_one_line_error(tmp_path: Path) -> None:
    code = (
        "import sys, torch\n"
        "sys.modules['matplotlib'] = None  # what an environment without it looks like\n"
        "from fcam.evaluation import write_report\n"
        "try:\n"
        "    write_report(sys.argv[1], torch.rand(1, 3, 8, 8), boxes=[[[0, 0, 4, 4]]],\n"
        "                 maps={'m': torch.rand(1, 8, 8)})\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, env=env, check=True)
    assert run.stdout == 'the evaluation report needs matplotlib: pip install "fcam[report]"\n'
    assert not any(tmp_path.iterdir())  # stopped before writing anything


# ------------------------------------------------------------------------ real browser
def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(_chromium() is None,
                    reason="headless Chromium is not installed (apt-get install chromium "
                           "chromium-driver)")
def test_report_in_headless_chromium(report: Path, data: dict[str, Any]) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = _chromium()  # type: ignore[misc]
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(report.resolve().as_uri())
        driver.execute_script("return document.readyState")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
            "i.naturalWidth])")
        assert len(images) == 18
        for src, complete, width in images:
            assert complete and width > 0, src
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('#metrics tr')).map(r => "
            "Array.from(r.cells).map(c => c.textContent))")
        for row in rows[1:]:
            scores = _library_scores(data, row[0])
            assert row[1:] == [f"{getattr(scores, attr):.2f}" for _, attr in COLUMNS]
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 100, 6000))
        shot = Path(os.environ.get("FCAM_SCREENSHOT_DIR", report.parent)) / "report.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
