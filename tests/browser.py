"""The web console's browser tests' shared parts: Debian's Chromium, headless, driven by
Selenium through chromium-driver (``chromium``), what went wrong on a page (``problems``)
and full-page screenshots (``Shots``). The console's integration test
(tests/integration/test_web_console.py) and the end-to-end install watched in a browser
(tests/e2e/test_network_boot.py) both use them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT = 20  # seconds a page has to show what the server knows (polls every 2 s)


@contextmanager
def chromium(tmp_path: Path, spki: str | None = None) -> Iterator[Any]:
    """A headless Chromium with a profile of its own under ``tmp_path``, its browser and
    performance logs kept (``problems`` reads them); ``spki``: the one certificate key it
    trusts besides the system's (``--ignore-certificate-errors-spki-list``). Skips the
    test when Chromium or its driver is not installed."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed (make setup installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    tmp_path.mkdir(parents=True, exist_ok=True)  # the driver's log goes there
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI: Chromium's sandbox needs a user namespace it may not get
        "--disable-gpu",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
        *([f"--ignore-certificate-errors-spki-list={spki}"] if spki else []),
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # The driver's log at WARNING: at INFO it records every command, the typed token too.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"),
                      service_args=["--log-level=WARNING"])  # fmt: skip
    with ExitStack() as stack:
        driver = webdriver.Chrome(options=options, service=service)
        stack.callback(driver.quit)  # the browser and its driver, stopped
        driver.set_page_load_timeout(WAIT)
        # Chromium's own start-up page (Debian's new-tab page) asks for things of its own,
        # one of which fails here with no network: what the logs hold before this is not
        # the console's, and is dropped.
        driver.get("about:blank")
        driver.get_log("browser")
        driver.get_log("performance")
        yield driver


def problems(driver: Any, origin: str) -> list[str]:
    """The page's console errors and failed requests since the last call."""
    found = [
        f"console: {entry['message']}"
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
    ]
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        method, params = message["method"], message.get("params", {})
        if method == "Network.loadingFailed" and not params.get("canceled"):
            found.append(f"request failed: {params.get('errorText')} ({params.get('type')})")
        elif method == "Network.responseReceived":
            response = params["response"]
            if response["url"].startswith(origin) and response["status"] >= 400:
                found.append(f"HTTP {response['status']}: {response['url']}")
    return found


class Shots:
    """Full-page screenshots under ``tmp_path``/screenshots and, with
    ``NETINSTALL_SCREENSHOTS=DIR``, into DIR too."""

    def __init__(self, driver: Any, tmp_path: Path) -> None:
        self.driver = driver
        self.places = [tmp_path / "screenshots"]
        wanted = os.environ.get("NETINSTALL_SCREENSHOTS")
        if wanted:
            self.places.append(Path(wanted))
        for place in self.places:
            place.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        """The whole page (the window made as tall as it), then the window as it was."""
        driver = self.driver
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(1400, max(1000, min(int(height) + 140, 4000)))
        for place in self.places:
            assert driver.save_screenshot(str(place / f"{name}.png"))
        driver.set_window_size(1400, 1000)

    def check(self, *names: str) -> None:
        """Each screenshot is there and shows something (not a blank page)."""
        for place in self.places:
            for name in names:
                assert (place / f"{name}.png").stat().st_size > 10_000
