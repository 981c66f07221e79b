"""``cortexloop console`` in a real browser (Debian's chromium, headless, driven by Selenium).

A simulated session runs; the console serves its database; the page shows its volumes arriving.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import CORTEXLOOP, free_port
from .test_simulate import SHORT

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (apt-get install)"
)
TOKEN = "a-token-for-this-test"


def session_started(database: Path) -> bool:
    try:
        with sqlite3.connect(database, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] > 0
    except sqlite3.OperationalError:
        return False


@pytest.fixture
def running_session(tmp_path: Path) -> Iterator[Path]:
    """A simulated session in progress (in one process: volumes come as fast as the CPU makes them)."""
    config = tmp_path / "short.toml"
    config.write_text(SHORT)
    out = tmp_path / "session"
    process = subprocess.Popen(
        [sys.executable, "-m", "loop.cli", "--log-level", "warning", "simulate", "--in-process",
         "--config", str(config), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not session_started(out / "cortexloop.sqlite"):
            assert process.poll() is None, "the simulated session stopped before it began"
            assert time.monotonic() < deadline, "the simulated session never began"
            time.sleep(0.1)
        yield out / "cortexloop.sqlite"
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def console(running_session: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [CORTEXLOOP, "console", "--db", str(running_session), "--port", str(port), "--token", TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "plotly.min.js", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "the console did not start"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.communicate(timeout=10)


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    service = Service(str(CHROMEDRIVER), log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.timeout(300)
def test_the_console_shows_a_running_sessions_volumes_arriving_in_a_browser(console: str, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    with pytest.raises(urllib.error.HTTPError) as refused:  # no token, no session
        urllib.request.urlopen(console + "state", timeout=5)
    assert refused.value.code == 403
    refused.value.close()
    browser.get(f"{console}?token={TOKEN}")

    def shown() -> int:
        return int(browser.find_element(By.ID, "volumes").text or 0)

    deadline = time.monotonic() + 120
    while shown() == 0:
        assert time.monotonic() < deadline, "no volume shown"
        time.sleep(0.2)
    first = shown()
    while shown() <= first:  # more come while the page is open: pushed, not reloaded
        assert time.monotonic() < deadline, f"the page stayed at {first} volumes"
        time.sleep(0.2)
    assert browser.find_element(By.ID, "session").text == "sub-01/ses-01"
    assert browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")  # a row per run
    assert browser.find_elements(By.CSS_SELECTOR, "#rois .main-svg")  # plotly drew the ROI time courses
    assert browser.find_elements(By.CSS_SELECTOR, "#motion .main-svg")
