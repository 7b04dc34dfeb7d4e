"""The web console watching a lab install in a real browser (tests/browser.py's Chromium).

``ConsoleWatch`` runs beside ``run_lab`` (the lab keeps the main thread: it turns SIGTERM
into an interrupt), on the lab's console port (``LabOptions.console_port``, lab/door.py).
Once the lab's server answers it logs in with the server's API token, sees the fleet
with the lab's host in it, opens the host's page and stays on it: the page follows the
install on its own (ui.js polls), and the watch records each state and step the page
shows, with no reload (a marker set in the page must still be there at the end). It
saves the fleet, the host's page mid-install and at running (and, reloaded then, its
whole time line), and ends
when the page says running or the lab is about to tear down (``stop``, the lab's
``before_teardown``). Any console error of the page or failed request fails it.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.browser import WAIT, Shots, chromium, problems

SERVER_WITHIN = 300.0  # seconds from the lab's start until its server answers
STOP_WITHIN = 60.0  # seconds the lab waits for the watch before tearing down
LOOK_EVERY = 0.5  # seconds between two looks at the page
LAST_LOOK = 15.0  # seconds the page has to show what the lab saw when the lab is done
MARKER = "watched without a reload"
SHOTS = ("lab-fleet", "lab-host-installing", "lab-host-running", "lab-host-timeline")


class ConsoleWatch:
    """Watches host ``mac`` (named ``name``) on the console at 127.0.0.1:``port``."""

    def __init__(self, tmp_path: Path, port: int, mac: str, name: str) -> None:
        self.tmp_path, self.port, self.mac, self.name = tmp_path, port, mac, name
        self.origin = f"http://127.0.0.1:{port}"
        self.seen: list[tuple[str, str]] = []  # (state, step), each change as the page showed it
        self.problems: list[str] = []
        self.error: BaseException | None = None
        self.saw_running = False
        self.shots: Shots | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The lab is done: the watch has a few seconds to see what the lab saw last (the
        page polls every 2 s), then ends."""
        self._thread.join(LAST_LOOK)
        self._stop.set()
        self._thread.join(STOP_WITHIN)

    def _run(self) -> None:
        try:
            self._watch()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            self.error = exc

    def _wait_for_server(self) -> bool:
        deadline = time.monotonic() + SERVER_WITHIN
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.origin}/ui/login", timeout=5) as reply:  # noqa: S310
                    if reply.status == 200:
                        return True
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(1)
        return False

    def _watch(self) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as shown
        from selenium.webdriver.support.ui import WebDriverWait

        if not self._wait_for_server():
            raise AssertionError(f"the lab's console at {self.origin} never answered")
        token = (self.tmp_path / "server" / "api-token").read_text().strip()
        with chromium(self.tmp_path / "browser") as browser:
            wait = WebDriverWait(browser, WAIT)
            shot = self.shots = Shots(browser, self.tmp_path)
            browser.get(f"{self.origin}/ui/")
            wait.until(shown.presence_of_element_located((By.NAME, "token")))
            browser.find_element(By.NAME, "token").send_keys(token)
            browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait.until(shown.presence_of_element_located((By.ID, "fleet")))
            rows = browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
            assert [row.get_attribute("data-mac") for row in rows] == [self.mac]
            shot("lab-fleet")
            browser.find_element(By.LINK_TEXT, self.name).click()
            wait.until(shown.text_to_be_present_in_element((By.TAG_NAME, "h1"), self.name))
            browser.execute_script(f"window.netinstallTestMarker = {MARKER!r};")

            def field(name: str) -> str:
                selector = f'[data-mac="{self.mac}"] [data-field="{name}"]'
                return str(browser.find_element(By.CSS_SELECTOR, selector).text)

            mid_install = False
            while not self._stop.is_set():
                now = (field("state"), field("step"))
                if not self.seen or self.seen[-1] != now:
                    self.seen.append(now)
                if not mid_install and now[0] == "installing" and now[1] == "download":
                    shot("lab-host-installing")
                    mid_install = True
                if now[0] == "running":
                    self.saw_running = True
                    shot("lab-host-running")
                    break
                time.sleep(LOOK_EVERY)
            marker = browser.execute_script("return window.netinstallTestMarker;")
            assert marker == MARKER, "the host's page was reloaded"
            if self.saw_running:  # the page again: its time line and events, all phases
                browser.refresh()
                wait.until(shown.presence_of_element_located((By.CSS_SELECTOR, "table.timeline")))
                shot("lab-host-timeline")
            self.problems = problems(browser, self.origin)
            assert token not in browser.page_source

    def check(self) -> list[tuple[str, str]]:
        """After the run: what the page showed, or the watch's failure raised."""
        if self.error is not None:
            raise self.error
        assert self.problems == [], self.problems
        assert self.saw_running, f"the host's page never said running: {self.seen}"
        assert len({state for state, _ in self.seen}) >= 2, self.seen  # it changed, live
        assert len({step for _, step in self.seen if step}) >= 2, self.seen
        assert self.shots is not None
        self.shots.check(
            "lab-fleet", "lab-host-installing", "lab-host-running", "lab-host-timeline"
        )
        return self.seen


def watched(seen: Any) -> str:
    """The states and steps the page showed, in order, for the test's output."""
    return " -> ".join(f"{state}:{step}" if step else state for state, step in seen)
