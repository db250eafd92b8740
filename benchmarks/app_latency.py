"""Figures of ``fcam app``, measured in headless Chromium against a real ``fcam app`` process.

1. **Start-up**: seconds from launching ``fcam app`` (no options: the demo's cached resnet18
   classifier and F-CAM checkpoint, 128 px) to (a) the server printing its URL and (b) the page
   loaded in the browser with its upload field. Stand-in files with the demo's architecture are
   written at the demo's cache paths in a temporary cache (the weights do not change the
   timing), unless ``--demo-cache`` points at a real, filled cache.
2. **Upload latency**: seconds from handing a file to the page's upload field to the
   Grad-CAM and F-CAM overlays rendered (every ``<img>`` loaded, ``naturalWidth > 0``), for a
   random-weight torchvision resnet50 at 224 px with an untrained F-CAM decoder (timing only).
3. **Memory over uploads**: the server's resident memory (``VmRSS``) after the first upload and
   after ``--uploads`` uploads in a row (distinct random 224 x 224 images) on the same page.

Usage::

    python benchmarks/app_latency.py --out app_latency.json
    python benchmarks/app_latency.py --uploads 50 --startups 3 --latency-uploads 10

Needs ``pip install "fcam[app]" selenium`` and Debian's ``chromium`` + ``chromium-driver``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("app_latency")


# ------------------------------------------------------------------------------- models
def demo_stand_ins(cache: Path) -> None:
    """A resnet18 classifier (5 classes, 128 px) and an F-CAM checkpoint at the demo's cache
    paths, so ``fcam app`` with no options opens on them without training."""
    os.environ["FCAM_CACHE_DIR"] = str(cache)
    from fcam.demo.cached import APP_CAM, _paths
    from fcam.demo.config import DemoConfig

    classifier, checkpoint = _paths(DemoConfig.quick(cams=(APP_CAM,)), APP_CAM)
    del os.environ["FCAM_CACHE_DIR"]
    from fcam.demo import build_classifier, save_classifier

    model = build_classifier(5, "resnet18").eval()
    classifier.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(model, classifier, arch="resnet18", image_size=128)
    untrained_fcam(model, "layer4", APP_CAM, checkpoint)


def untrained_fcam(model: torch.nn.Module, layer: str, cam: str, path: Path) -> None:
    """An F-CAM checkpoint with the decoder at its initialisation (same cost as a fitted one)."""
    from fcam import FCAM

    fc = FCAM(model, target_layer=layer, cam=cam)
    fc.fitted = True  # timing only: the decoder's weights do not change the work done
    path.parent.mkdir(parents=True, exist_ok=True)
    fc.save(path)


def resnet50_files(folder: Path) -> tuple[Path, Path]:
    from fcam.models import ClassifierSpec, build_model, save_classifier

    spec = ClassifierSpec("resnet50", num_classes=1000, target_layer="layer4", input_size=224)
    model = build_model(spec).eval()
    classifier = save_classifier(model, spec, folder / "resnet50.pt")
    untrained_fcam(model, "layer4", "gradcam", folder / "fcam-resnet50.pt")
    return classifier, folder / "fcam-resnet50.pt"


# ------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m fcam app ARGS`` with its output read line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fcam", "app", *args, "--port", str(free_port())],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **env},
        )

    def wait_url(self, timeout: float = 600.0) -> str:
        assert self.proc.stdout is not None
        lines = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.proc.stdout], [], [], 1.0)[0]:
                line = self.proc.stdout.readline()
                lines.append(line)
                if line.startswith("fcam app: serving "):
                    return line.split()[3]
            if self.proc.poll() is not None:
                break
        raise RuntimeError("fcam app did not start:\n" + "".join(lines))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.proc.send_signal(2)
        try:
            self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


# ----------------------------------------------------------------------------- browser
def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1100"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"),
                            options=options)


def wait_for(condition: Callable[[], Any], timeout: float = 120.0, poll: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError("condition not met")


_OVERLAYS_JS = """
return Array.from(document.querySelectorAll('#overlays img')).map(
    i => [i.getAttribute('src'), i.getAttribute('alt'), i.complete ? i.naturalWidth : 0]);
"""


def upload_and_wait(driver: Any, path: Path, previous: set[str], captions: list[str]) -> float:
    """Seconds from giving ``path`` to the upload field to every overlay of ``captions`` shown
    with new pixels (sources not in ``previous``, each ``naturalWidth > 0``)."""
    from selenium.webdriver.common.by import By

    field = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    tick = time.perf_counter()
    field[0].send_keys(str(path))

    def shown() -> list[Any] | None:
        items = driver.execute_script(_OVERLAYS_JS)
        names = [str(alt).split(" · ")[0] for _, alt, _ in items]
        fresh = all(src not in previous and width > 0 for src, _, width in items)
        return items if names == captions and fresh else None

    try:
        items = wait_for(shown)
    except TimeoutError:
        status = driver.find_element(By.ID, "status").text
        shot = Path(tempfile.gettempdir()) / f"app-latency-timeout-{path.stem}.png"
        driver.save_screenshot(str(shot))
        raise TimeoutError(f"no fresh overlays for {path.name}: status {status!r}, overlays "
                           f"{driver.execute_script(_OVERLAYS_JS)}, screenshot {shot}") from None
    seconds = time.perf_counter() - tick
    previous.clear()
    previous.update(src for src, _, _ in items)
    driver.find_element(By.CSS_SELECTOR, "#upload button[aria-label='Clear']").click()
    return seconds


def random_images(folder: Path, count: int, size: int = 224) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        # Smooth random blobs (a JPEG photo's size, not incompressible noise).
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)
        path = folder / f"upload-{i:03d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


# -------------------------------------------------------------------------------- runs
def measure_startup(work: Path, runs: int, demo_cache: Path | None) -> dict[str, Any]:
    from selenium.webdriver.common.by import By

    cache = demo_cache
    if cache is None:
        cache = work / "cache"
        demo_stand_ins(cache)
    served, ready = [], []
    for _ in range(runs):
        driver = browser()  # started before the server: its own start-up is not counted
        server = Server([], {"FCAM_CACHE_DIR": str(cache)})
        try:
            url = server.wait_url()
            served.append(time.perf_counter() - server.started)
            driver.get(url)
            wait_for(lambda d=driver: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
            ready.append(time.perf_counter() - server.started)
        finally:
            server.stop()
            driver.quit()
        logger.info("start-up: served %.1f s, page ready %.1f s", served[-1], ready[-1])
    return {"served_s": served, "page_ready_s": ready,
            "median_page_ready_s": statistics.median(ready),
            "classifier": "demo cache" if demo_cache else "demo-cache stand-in (resnet18, 128 px)"}


def measure_uploads(work: Path, latency_uploads: int, uploads: int) -> dict[str, Any]:
    classifier, checkpoint = resnet50_files(work)
    images = random_images(work, uploads + latency_uploads)  # every upload a new image
    server = Server(["--classifier", str(classifier), "--checkpoint", str(checkpoint)], {})
    driver = browser()
    try:
        url = server.wait_url()
        driver.get(url)
        captions = ["image", "Grad-CAM", "F-CAM"]
        previous: set[str] = set()
        latencies = []
        for path in images[:latency_uploads]:
            latencies.append(upload_and_wait(driver, path, previous, captions))
            logger.info("upload -> overlays: %.2f s", latencies[-1])
        captions_now = [alt for _, alt, _ in driver.execute_script(_OVERLAYS_JS)]
        # Memory: a fresh page, then `uploads` uploads in a row.
        driver.get(url)
        previous.clear()
        rss = []
        for i, path in enumerate(images[latency_uploads:]):
            upload_and_wait(driver, path, previous, captions)
            rss.append(server.rss_mb())
            if i % 10 == 0:
                logger.info("upload %d: server RSS %.0f MB", i + 1, rss[-1])
    finally:
        driver.quit()
        server.stop()
    return {
        "model": "resnet50 (random weights), 224 px, untrained F-CAM decoder",
        "latency_s": latencies,
        "median_latency_s": statistics.median(latencies),
        "server_map_times": captions_now,
        "uploads": uploads,
        "rss_mb": rss,
        "rss_after_first_mb": rss[0],
        "rss_after_last_mb": rss[-1],
        "rss_growth_mb": rss[-1] - rss[0],
        "rss_max_growth_mb": max(rss) - rss[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--startups", type=int, default=3)
    parser.add_argument("--latency-uploads", type=int, default=10)
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--demo-cache", type=Path, default=None,
                        help="a filled demo cache (FCAM_CACHE_DIR) instead of stand-ins")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="app-latency-") as folder:
        work = Path(folder)
        results = {
            "cpu_threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg(),
            "startup": (measure_startup(work, args.startups, args.demo_cache)
                        if args.startups else None),
            "uploads": measure_uploads(work, args.latency_uploads, args.uploads),
            "load_average_at_end": os.getloadavg(),
        }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
