"""Browser tests: Debian's headless Chromium through Selenium (the server it is pointed
at comes from tests/support/live_server.py).

Nothing is downloaded: the driver and the browser are the distribution's
(/usr/bin/chromedriver, /usr/bin/chromium), the way CI installs them.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 900)
T = TypeVar("T")


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None if they can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).is_file() and not shutil.which(path):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    return None


@contextlib.contextmanager
def chromium(profile_dir: Path, window: tuple[int, int] = WINDOW) -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile, quiet on the network, at a fixed size and a
    device pixel ratio of 1 (so element rectangles are screenshot pixels)."""
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile_dir}",
        f"--window-size={window[0]},{window[1]}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 30) -> T:
    """The first truthy value of condition(driver), polled; TimeoutException after `timeout`."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def console_errors(driver: WebDriver) -> list[str]:
    """Severe messages from the page's console: script errors, CSP violations, failed loads."""
    entries: list[dict[str, Any]] = driver.get_log("browser")
    return [e["message"] for e in entries if e.get("level") == "SEVERE"]


def screenshot(driver: WebDriver, save_to: Path) -> np.ndarray:
    """The visible page as uint8 H x W x 3, also saved as a PNG for a human to look at."""
    png = driver.get_screenshot_as_png()
    save_to.write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
