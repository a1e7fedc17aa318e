"""Debian's chromium, headless, driven by selenium: for the dashboard's tests.

A missing browser or driver fails the test with what to install (``make system-deps``); it is
never skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT_ENV = "STREAM_LEARNER_SCREENSHOT"


@contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), f"{path} is missing: `make system-deps` installs it"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--force-color-profile=srgb", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: webdriver.Chrome, what: str, condition: Callable[[WebDriver], Any],
               timeout: float = 30.0) -> Any:
    """``WebDriverWait(...).until(condition)``; at the deadline, fail with ``what`` and what the
    page shows (its version, its metric chart's points, its console's errors)."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        shown = (f"the page shows version {text_of(driver, 'version')!r}, "
                 f"{points(driver, 'metric-chart')} metric points, errors {page_errors(driver)}")
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; {shown}") from None


def text_of(driver: WebDriver, id_: str) -> str:
    """An element's text as the page wrote it (selenium's ``.text`` is as CSS shows it)."""
    return driver.find_element(By.ID, id_).get_attribute("textContent") or ""


def rows_of(driver: WebDriver, table: str) -> list[list[str]]:
    """The cells' text of each row of a table's body, read in one script: the page redraws its
    tables at each poll, and a row read element by element can be gone before its cells are."""
    rows: list[list[str]] = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " (row) => Array.from(row.querySelectorAll('td'), (cell) => cell.textContent));",
        f"#{table} tbody tr")
    return rows


def points(driver: WebDriver, chart: str) -> int:
    """How many points the dashboard drew in ``chart`` (its SVG's ``data-points``)."""
    return int(driver.find_element(By.ID, chart).get_attribute("data-points") or 0)


def page_errors(driver: webdriver.Chrome) -> list[str]:
    """The console's errors since the last call: a script's exceptions, refused resources
    (the page's Content-Security-Policy), failed requests."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry["message"] for entry in entries if entry["level"] == "SEVERE"]


def save_screenshot(driver: WebDriver, path: Path) -> Path:
    """The whole page as a PNG at ``path``, and also at $STREAM_LEARNER_SCREENSHOT when set."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    width = int(driver.execute_script("return window.innerWidth"))
    driver.set_window_size(width, height + 120)  # the window's chrome is not the page's
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path)), path
    extra = os.environ.get(SCREENSHOT_ENV)
    if extra:
        Path(extra).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, extra)
    return path
