"""The web console in a real browser: Debian's Chromium, headless, driven by Selenium.

A real ``netinstall server run`` on loopback with TLS (tests/pki.py's certificate;
Chromium trusts that certificate's key alone, ``--ignore-certificate-errors-spki-list``,
which it honours only with a profile directory of its own: no check is turned off for
any other certificate). The test logs in, sees the fleet, opens a host, drives an
install through the boot path as the installer sends it (two_servers.BootClient) while
the fleet is open and sees the row's state and progress change with no reload, rearms
the host through the page's confirmation, and saves screenshots (fleet, host, pools)
under its tmp dir and, with ``NETINSTALL_SCREENSHOTS=DIR``, into DIR. Any console error
of the page's (the browser log at SEVERE, which ui.js's own failure hook writes to) or
failed request (the performance log) fails it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.browser import WAIT, Shots, chromium, problems
from tests.integration.conftest import netinstall
from tests.integration.two_servers import PAYLOAD, VERSION, BootClient, Running, serving
from tests.pki import make_pki
from tests.repository import write_repository

pytestmark = pytest.mark.integration

HOSTS = {  # MAC: name
    "52:54:00:0a:00:01": "web-01",
    "52:54:00:0a:00:02": "web-02",
    "52:54:00:0a:00:03": "db-01",
    "52:54:00:0a:00:04": "db-02",
    "52:54:00:0a:00:05": "cache-01",
    "52:54:00:0a:00:06": "db-03",
}
POOL = ("52:54:00:0a:00:03", "52:54:00:0a:00:06", "52:54:00:0a:00:05")  # master first
NEW_VERSION = "2.0"
WATCHED = "52:54:00:0a:00:01"


def spki_hash(cert: Path) -> str:
    """What ``--ignore-certificate-errors-spki-list`` names a key by: base64 SHA-256 of
    the certificate's SubjectPublicKeyInfo."""
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    der = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _server(tmp: Path) -> Iterator[tuple[Running, str]]:
    pki = make_pki(tmp / "pki")
    repo = write_repository(tmp / "repo", {name: name.encode() for name in PAYLOAD}, VERSION, "b1")
    netboot = tmp / "netboot"
    netboot.mkdir()
    (netboot / "pxelinux.0").write_bytes(b"\x7fpxelinux" * 10)
    directory = tmp / "server"
    done = netinstall("server", "init", str(directory), "--repo", str(repo),
                      "--netboot", str(netboot))  # fmt: skip
    assert done.returncode == 0, done.stderr
    for mac, name in HOSTS.items():
        added = netinstall("host", "add", mac, "--dir", str(directory), "--name", name)
        assert added.returncode == 0, added.stderr
    made = netinstall("pool", "create", "rack-a", *POOL[1:], "--dir", str(directory),
                      "--master", POOL[0])  # fmt: skip
    assert made.returncode == 0, made.stderr
    newer = write_repository(tmp / "repo2", {n: n.encode() for n in PAYLOAD}, NEW_VERSION, "b2")
    added = netinstall("server", "repo", "add", str(newer), "--dir", str(directory))
    assert added.returncode == 0, added.stderr
    tls = ("--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-port", "0")
    with serving(directory, tmp / "server.log", *tls) as running:
        yield running, spki_hash(pki.cert)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Running, str]]:
    yield from _server(tmp_path)


@pytest.fixture
def browser(tmp_path: Path, server: tuple[Running, str]) -> Iterator[Any]:
    with chromium(tmp_path, server[1]) as driver:
        yield driver


def test_the_console_follows_an_install_and_rearms_a_host(
    tmp_path: Path, server: tuple[Running, str], browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    running, _ = server
    origin = f"https://127.0.0.1:{running.tls_port}"
    token = (running.directory / "api-token").read_text().strip()
    wait = WebDriverWait(browser, WAIT)
    shot = Shots(browser, tmp_path)

    def cell(mac: str, field: str) -> Any:
        return browser.find_element(By.CSS_SELECTOR, f'[data-mac="{mac}"] [data-field="{field}"]')

    # Some history for the pages to show: one host failed, one installed with its logs.
    port = running.http_port
    failed, installed = BootClient("52:54:00:0a:00:02"), BootClient("52:54:00:0a:00:04")
    for client in (failed, installed):
        ticket = client.token_of(client.boot_config(port))
        assert ticket is not None
        assert client.enrol(port, ticket).status == 200
        assert client.answer_file(port).status == 200
        assert client.event(port, "installing", step="partition", progress=0.2).status == 200
    assert failed.event(port, "failed", message="partition: <no disk> vda").status == 200
    for step, progress in (("download", 0.4), ("extract", 0.7), ("bootloader", 0.9)):
        assert installed.event(port, "installing", step=step, progress=progress).status == 200
    assert installed.logs(port, b"BZh9 the installer's logs").status == 201
    assert installed.event(port, "installed").status == 200
    # The pool's hosts run 1.0, and a rolling upgrade to 2.0 starts: the server's job
    # runner takes it and gives the master its upgrade first.
    for mac in POOL:
        member = BootClient(mac)
        ticket = member.token_of(member.boot_config(port))
        assert ticket is not None
        assert member.enrol(port, ticket).status == 200
        assert member.event(port, "installed").status == 200
        facts = {"payload_version": VERSION}
        assert member.event(port, "running", facts=facts).status == 200
    upgrade = netinstall("pool", "upgrade", "rack-a", NEW_VERSION, "--no-follow",
                         "--dir", str(running.directory))  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr

    assert f"web console: {origin}/ui/" in running.log_text()  # server run says where
    # The plain port does not serve the console: it says where it is.
    browser.get(f"http://127.0.0.1:{port}/ui/")
    assert f"{origin}/ui/" in browser.page_source
    browser.get_log("browser")  # that 403 was asked for
    browser.get_log("performance")

    # Log in.
    browser.get(f"{origin}/ui/")
    wait.until(seen.presence_of_element_located((By.NAME, "token")))
    assert "/ui/login" in browser.current_url
    browser.find_element(By.NAME, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(seen.presence_of_element_located((By.ID, "fleet")))
    assert token not in browser.page_source
    cookies = browser.get_cookies()
    assert [c["name"] for c in cookies] == ["netinstall_session"]
    assert cookies[0]["httpOnly"]
    assert cookies[0]["secure"]
    assert cookies[0]["sameSite"] == "Strict"

    # The fleet: every host, the failed one first.
    rows = browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
    assert len(rows) == len(HOSTS)
    assert rows[0].get_attribute("data-mac") == failed.mac
    assert cell(WATCHED, "state").text == "pending"

    # A host's page, then back to the fleet.
    browser.find_element(By.LINK_TEXT, "web-01").click()
    wait.until(seen.text_to_be_present_in_element((By.TAG_NAME, "h1"), "web-01"))
    browser.back()
    wait.until(seen.presence_of_element_located((By.ID, "fleet")))

    # The install, driven while the fleet is open: the row follows without a reload.
    browser.execute_script("window.netinstallTestMarker = 'same page';")
    watched = BootClient(WATCHED)
    ticket = watched.token_of(watched.boot_config(port))
    assert ticket is not None
    wait.until(lambda _: cell(WATCHED, "state").text == "signalled")
    assert watched.enrol(port, ticket).status == 200
    assert watched.answer_file(port).status == 200
    assert watched.event(port, "installing", step="partition", progress=0.3).status == 200
    wait.until(lambda _: cell(WATCHED, "step").text == "partition")
    assert cell(WATCHED, "state").text == "installing"
    assert cell(WATCHED, "progress").get_attribute("value") == "30"
    assert watched.event(port, "installing", step="download", progress=0.65).status == 200
    wait.until(lambda _: cell(WATCHED, "progress").get_attribute("value") == "65")
    assert cell(WATCHED, "step").text == "download"
    assert cell(WATCHED, "percent").text == "65 %"
    assert browser.execute_script("return window.netinstallTestMarker;") == "same page"
    shot("fleet")

    # Its page: the record, the time line of its phases, its events.
    browser.find_element(By.LINK_TEXT, "web-01").click()
    wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "table.timeline")))
    phases = browser.find_elements(By.CSS_SELECTOR, "table.timeline tbody tr")
    labels = [row.find_element(By.TAG_NAME, "td").text for row in phases]
    # The server's own milestone (the answer file fetched) is a phase of its own.
    assert labels[:4] == ["pending", "signalled", "signalled: answer-file", "installing: partition"]
    assert labels[-1].startswith("installing: download")
    assert "(now)" in labels[-1]
    assert watched.event(port, "installing", step="bootloader", progress=0.9).status == 200
    wait.until(lambda _: cell(WATCHED, "step").text == "bootloader")  # its page is live too
    shot("host")

    # Rearm it: the action, its confirmation, the result.
    browser.find_element(By.LINK_TEXT, "Rearm").click()
    wait.until(seen.presence_of_element_located((By.ID, "confirm")))
    assert "Rearm web-01?" in browser.find_element(By.TAG_NAME, "h1").text
    browser.find_element(By.ID, "confirm").click()
    wait.until(seen.presence_of_element_located((By.CLASS_NAME, "done")))
    assert "Rearmed" in browser.find_element(By.CLASS_NAME, "done").text
    assert cell(WATCHED, "state").text == "pending"
    shown = browser.page_source
    assert "rearmed: new install work" in shown

    # The installed host's page has its log bundle to download.
    browser.get(f"{origin}/ui/hosts/{installed.mac}")
    link = browser.find_element(By.CSS_SELECTOR, "ul.logs a")
    assert link.get_attribute("href").startswith(f"{origin}/ui/hosts/{installed.mac}/logs/")

    # The pools: rack-a's rolling upgrade, host by host (the master's under way).
    browser.find_element(By.LINK_TEXT, "Pools").click()
    wait.until(seen.text_to_be_present_in_element((By.TAG_NAME, "main"), "rack-a"))

    def master_upgrading(_: object) -> bool:  # once a job runner took the job (2 s polls)
        browser.refresh()
        return "upgrading" in browser.find_element(By.CSS_SELECTOR, "ol.job-hosts li").text

    wait.until(master_upgrading)
    steps = browser.find_elements(By.CSS_SELECTOR, "ol.job-hosts li")
    assert [s.find_element(By.TAG_NAME, "a").text for s in steps] == ["db-01", "db-03", "cache-01"]
    assert "upgrading" in steps[0].text
    assert all("waiting" in s.text for s in steps[1:])
    shot("pools")

    # Back to the fleet for a last look, then nothing went wrong on any page.
    browser.find_element(By.LINK_TEXT, "Fleet").click()
    wait.until(lambda _: cell(WATCHED, "state").text == "pending")
    found = problems(browser, origin)
    assert found == [], found
    assert token not in running.log_text()  # the login's token is never logged
    assert token not in (tmp_path / "chromedriver.log").read_text(errors="replace")
    shot.check("fleet", "host", "pools")
