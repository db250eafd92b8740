"""``fcam app`` in a real browser: headless Chromium (Debian's chromium + chromium-driver)
driven by Selenium against a real ``fcam app`` process on a free loopback port.

The screenshot is written to the test's folder, and to ``$FCAM_APP_SCREENSHOT`` when set (to
look at it).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from app_helpers import AppProcess
from PIL import Image

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[Any]:
    pytest.importorskip("gradio")
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or condition}")


def overlays(driver: Any) -> list[tuple[str, int]]:
    """``(caption, naturalWidth)`` of every rendered gallery image."""
    from selenium.webdriver.common.by import By

    return [
        (img.get_attribute("alt"), int(driver.execute_script(
            "return arguments[0].complete ? arguments[0].naturalWidth : 0", img)))
        for img in driver.find_elements(By.CSS_SELECTOR, "#overlays img")
    ]


def downloads(driver: Any) -> str:
    """The download list's text (file names are split over lines at the extension)."""
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "downloads").text).replace("\n", "")


def rendered(driver: Any, captions: list[str]) -> bool:
    shown = overlays(driver)
    return [c.split(" · ")[0] for c, _ in shown] == captions and all(w > 0 for _, w in shown)


def test_upload_shows_overlays_and_top5(browser: Any, app_process: type[AppProcess],
                                        tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    classifier, checkpoint = tiny_files
    app = app_process(["--classifier", str(classifier), "--checkpoint", str(checkpoint)],
                      tmp_path / "tmp")
    url = app.wait_ready()
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8)).save(photo)

    browser.get(url)
    upload = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"),
                      what="the upload field")[0]
    upload.send_keys(str(photo))
    wait_for(lambda: rendered(browser, ["image", "Grad-CAM", "F-CAM"]), what="the overlays")
    assert all(width == 160 for _, width in overlays(browser))  # the 160 x 120 upload
    assert all(" ms" in caption for caption, _ in overlays(browser)[1:])  # time per map
    labels = [label.text for label in browser.find_elements(By.CSS_SELECTOR, "#top5 label")]
    assert len(labels) == 5 and all(label.endswith(" %") for label in labels), labels
    target = browser.find_element(By.CSS_SELECTOR, "#target input")
    top = labels[0].split(":")[0].removeprefix("class ")
    assert target.get_attribute("value") == top
    listed = downloads(browser)
    for name in ("gradcam", "fcam"):
        assert f"{name}-class{top}.png" in listed and f"{name}-class{top}.npy" in listed
    screenshot = tmp_path / "fcam-app.png"
    browser.save_screenshot(str(screenshot))
    if os.environ.get("FCAM_APP_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["FCAM_APP_SCREENSHOT"])
    with Image.open(screenshot) as shot:
        assert shot.size[0] >= 1000

    # The threshold slider redraws the overlays (with each map's box at the new threshold).
    def gradcam_tile() -> str:
        return str(browser.find_elements(By.CSS_SELECTOR, "#overlays img")[1].get_attribute("src"))

    before = gradcam_tile()
    slider = browser.find_element(By.CSS_SELECTOR, "#threshold input[type=range]")
    ActionChains(browser).move_to_element_with_offset(
        slider, int(slider.size["width"] * 0.4), 0).click().perform()  # 0.5 -> about 0.9
    wait_for(lambda: float(slider.get_attribute("value")) > 0.8, what="the new threshold")
    # Tiles are served by content hash: a new box gives a new address.
    wait_for(lambda: rendered(browser, ["image", "Grad-CAM", "F-CAM"]) and gradcam_tile() != before,
             what="the Grad-CAM overlay redrawn")

    # Choosing another prediction explains that class.
    last = browser.find_elements(By.CSS_SELECTOR, "#top5 label")[-1]
    chosen = last.text.split(":")[0].removeprefix("class ")
    last.click()
    wait_for(lambda: target.get_attribute("value") == chosen, what="the chosen class")
    wait_for(lambda: f"gradcam-class{chosen}.npy" in downloads(browser),
             what="the chosen class's maps")

    # A file that is not an image: a message on the page, no traceback, the server goes on.
    junk = tmp_path / "notes.png"
    junk.write_text("hello")
    browser.find_element(By.CSS_SELECTOR, "#upload button[aria-label='Clear']").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"),
             what="an empty upload field")
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(junk))
    status = wait_for(lambda: browser.find_element(By.ID, "status").text, what="the message")
    assert "notes.png is not an image Pillow can read" in status
    assert "Traceback" not in browser.page_source and overlays(browser) == []

    # The bundled examples still work after the error.
    browser.find_element(By.XPATH, "//button[contains(., 'example-star.png') or "
                                   "contains(., 'example-ellipse.png')]").click()
    wait_for(lambda: rendered(browser, ["image", "Grad-CAM", "F-CAM"]), what="the example")
    assert browser.find_element(By.ID, "status").text == ""

    output = app.stop(signal.SIGINT)
    assert app.proc.returncode == 0 and "Traceback" not in output, output
    assert list(app.tmpdir.iterdir()) == []
