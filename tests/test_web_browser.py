"""The web page of `vsr serve` in a real headless browser (Debian's chromium + chromium-driver, driven by
selenium with an explicit driver path, so nothing is downloaded): upload the sample clip, wait for the job,
see the comparison, download the result and count its frames; and a server with a token asks for it once.

Skipped with the reason when the browser, its driver or selenium is not installed (`.ci/run` installs them;
by hand: `apt-get install -y chromium chromium-driver`). With VSR_SCREENSHOT=PATH the finished page is
saved there (scripts/screenshot_web.py makes docs/web-page.png with the shipped model this way).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from clips import frame_image, probe
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "calendar.mp4"

pytestmark = pytest.mark.slow
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"no headless browser: {CHROMIUM} and {CHROMEDRIVER} are needed "
                "(apt-get install -y chromium chromium-driver)", allow_module_level=True)

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@contextmanager
def serve(tmp_path: Path, weights: str, *args: str) -> Iterator[str]:
    """`vsr serve --port 0` in a subprocess; yields the URL it prints."""
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen([sys.executable, "-m", "vsr", "serve", "--port", "0", "--weights", weights,
                                 "--workdir", str(tmp_path / "work"), *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not (m := re.search(r"open (http://\S+/) in a browser", log.read_text())):
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.1)
        yield m[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def browser(downloads: Path, width: int = 1000, height: int = 1000) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 60, what: str = ""):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))
    except TimeoutException:
        message = driver.find_element(By.ID, "message").text
        raise AssertionError(f"timed out waiting for {what}; the page says: {message!r}") from None


def shown(driver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def natural_width(driver, element_id: str) -> int:
    return driver.execute_script("const i = document.getElementById(arguments[0]); "
                                 "return i.complete ? i.naturalWidth : 0;", element_id)


def save_screenshot(driver, path: Path) -> None:
    """The whole page as a palette PNG (small enough to commit)."""
    driver.execute_script("document.activeElement.blur()")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1000, height + 200)  # the window is taller than the page it shows
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


@pytest.fixture
def weights(tiny_weights: Path) -> str:
    """A tiny random-init model (fast on 2 CPU cores), or VSR_WEB_WEIGHTS (the screenshot uses the shipped one)."""
    return os.environ.get("VSR_WEB_WEIGHTS") or str(tiny_weights)


def test_upscale_the_sample_clip_in_the_browser(tmp_path: Path, weights: str):
    frames_in = probe(SAMPLE)["frames"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with serve(tmp_path, weights, "--device", "cpu") as url, browser(downloads) as driver:
        driver.get(url)
        wait(driver, lambda d: d.find_element(By.ID, "model-info").text, what="the model's description")
        driver.find_element(By.ID, "file-input").send_keys(str(SAMPLE))
        wait(driver, lambda d: d.find_element(By.ID, "start-button").is_enabled(), what="the Upscale button")
        assert "calendar.mp4" in driver.find_element(By.ID, "file-name").text
        driver.find_element(By.ID, "start-button").click()
        wait(driver, lambda d: shown(d, "job-section"), what="the job's progress")
        wait(driver, lambda d: shown(d, "result-section"), timeout=300, what="the finished job")
        wait(driver, lambda d: natural_width(d, "after-img") and natural_width(d, "before-img"), what="the comparison")
        assert natural_width(driver, "after-img") == natural_width(driver, "before-img") == 720
        assert f"Done: {frames_in} frames" in driver.find_element(By.ID, "job-status").text
        assert not shown(driver, "job-cancel")  # nothing left to cancel
        assert driver.find_element(By.ID, "frame-input").get_attribute("max") == str(frames_in - 1)
        slider = driver.find_element(By.ID, "compare-slider")  # the comparison line moves by keyboard
        slider.send_keys("\ue012" * 10)  # Left arrow x10
        assert driver.find_element(By.ID, "divider").value_of_css_property("left") != "" and slider.get_attribute("value") == "40"
        assert "inset(0px 60%" in driver.execute_script("return document.getElementById('before-img').style.clipPath")
        rows = driver.find_elements(By.CSS_SELECTOR, "#jobs-body tr")
        assert len(rows) == 1 and "done" in rows[0].text and "calendar.mp4" in rows[0].text
        if os.environ.get("VSR_SCREENSHOT"):
            slider.send_keys("\ue014" * 10)  # back to the middle
            save_screenshot(driver, Path(os.environ["VSR_SCREENSHOT"]))
        driver.find_element(By.ID, "download").click()
        done = wait(driver, lambda d: [p for p in downloads.iterdir() if p.suffix == ".mkv"], what="the download")
    out = probe(done[0])
    assert done[0].name == "calendar_x4.mkv"
    assert out["frames"] == frames_in and (out["width"], out["height"]) == (720, 576)


def test_a_token_is_asked_for_once_and_errors_are_readable(tmp_path: Path, weights: str):
    bad = tmp_path / "not-a-video.mp4"
    bad.write_bytes(b"hello" * 100)
    image = tmp_path / "photo.png"
    Image.fromarray(frame_image(0, 40, 30)).save(image)
    with serve(tmp_path, weights, "--device", "cpu", "--token", "s3cret") as url, browser(tmp_path) as driver:
        driver.get(url)
        wait(driver, lambda d: shown(d, "token-section"), what="the token form")
        assert "needs an access token" in driver.find_element(By.ID, "message").text
        assert driver.switch_to.active_element.get_attribute("id") == "token-input"  # focus is in the form
        box = driver.find_element(By.ID, "token-input")
        box.send_keys("wrong\n")
        wait(driver, lambda d: "refused that token" in d.find_element(By.ID, "message").text, what="the refusal")
        driver.find_element(By.ID, "token-input").send_keys("s3cret\n")
        wait(driver, lambda d: not shown(d, "token-section") and d.find_element(By.ID, "model-info").text,
             what="the page after the token")
        assert not shown(driver, "message")
        driver.refresh()  # the tab keeps the token: not asked again
        wait(driver, lambda d: d.find_element(By.ID, "model-info").text, what="the reloaded page")
        assert not shown(driver, "token-section")
        driver.find_element(By.ID, "file-input").send_keys(str(bad))  # the server's 415, as a sentence
        driver.find_element(By.ID, "start-button").click()
        wait(driver, lambda d: "415" in d.find_element(By.ID, "message").text, what="the server's error")
        assert "Not a supported file (415)" in driver.find_element(By.ID, "message").text
        assert "not a readable media file" in driver.find_element(By.ID, "message").text
        driver.find_element(By.ID, "file-input").send_keys(str(image))  # an image: /v1/images, shown at once
        assert not shown(driver, "video-options") and not shown(driver, "message")
        driver.find_element(By.ID, "start-button").click()
        wait(driver, lambda d: natural_width(d, "after-img") == 4 * 40, what="the upscaled image")
        assert natural_width(driver, "before-img") == 40 and not shown(driver, "frame-picker")
        assert driver.find_element(By.ID, "download").get_attribute("download") == "photo_x4.png"
