"""Driving Debian's Chromium (``chromium`` + ``chromium-driver``, installed by ``.ci/run``) headless through
Selenium for the console's browser tests: the driver, waits that say what they waited for, and screenshots
of each page (``DEEPTRAIN_SCREENSHOTS``, default ``build/console-screenshots``)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("DEEPTRAIN_SCREENSHOTS", Path(__file__).resolve().parents[1] / "build" /
                            "console-screenshots"))


def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium; a missing browser is a failure that says what to install, never a skip."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).exists()]
    assert not missing, (f"{', '.join(missing)} missing: install Debian's chromium and chromium-driver "
                         "(`apt-get install chromium chromium-driver`, as .ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(60)
    return driver


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    """``check()``'s first truthy value; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # noqa: BLE001 - elements come and go while a page renders
            value, last = None, exc
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last})" if last else ""))


def screenshot(driver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def js_errors(driver) -> list[str]:
    """The page's uncaught JavaScript errors (a refused request's network line is not one: the page shows it)."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and e.get("source") != "network"]
