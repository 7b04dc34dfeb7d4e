"""Several servers, one fleet (issue 19): two ``netinstall server run`` processes share one
PostgreSQL registry. A host installs through server A (its boot path over HTTP, no QEMU)
while the operator follows it through server B's HTTPS API with the CLI; the secrets one
server handed out work on the other, and what one server recorded the other acts on."""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.two_servers import (
    B_ADDRESS,
    VERSION,
    BootClient,
    Pair,
    request,
    two_servers,
)
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.integration

MAC = "52:54:00:19:00:01"
STEPS = ("plan", "partition", "download", "extract-root", "bootloader")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def pair(tmp_path: Path, postgres_url: str, pki: Pki) -> Iterator[Pair]:
    with two_servers(tmp_path, postgres_url, pki) as running:
        yield running


def shown(pair: Pair, mac: str = MAC) -> dict[str, object]:
    """``host show MAC --json`` through B (HTTPS)."""
    done = pair.cli_b("host", "show", mac, "--json")
    assert done.returncode == 0, done.stderr
    value = json.loads(done.stdout)
    assert isinstance(value, dict)
    return value


def listed(pair: Pair) -> dict[str, dict[str, object]]:
    """``host list --json`` through B, by MAC."""
    done = pair.cli_b("host", "list", "--json")
    assert done.returncode == 0, done.stderr
    return {str(item["mac"]): item for item in json.loads(done.stdout)}


def test_a_host_installs_through_a_while_the_cli_follows_it_through_b(pair: Pair) -> None:
    a, b = pair.a.http_port, pair.b.http_port
    # The second directory shares the first one's registry, and so its API token.
    assert "shares the registry's API token" in pair.init_b, pair.init_b
    assert not (pair.b.directory / "api-token").exists()
    added = pair.cli_b("host", "add", MAC, "--name", "web1", "--var", "root_password=pa55word")
    assert added.returncode == 0, added.stderr
    assert shown(pair)["state"] == "pending"
    host = BootClient(MAC)

    # The boot config through A: the install one, with its token; signalled, seen on B.
    token = host.token_of(host.boot_config(a))
    assert token is not None
    assert shown(pair)["state"] == "signalled"
    assert listed(pair)[MAC]["state"] == "signalled"
    # The install token A handed out enrols through B.
    enrolled = host.enrol(b, token)
    assert enrolled.status == 200, enrolled
    assert shown(pair)["install_key"] == "set"
    # The answer file and every report through A, each state seen through B.
    answer = host.answer_file(a)
    assert answer.status == 200, answer
    assert b'<root-password type="hash">$6$' in answer.body
    for step in STEPS:
        assert host.event(a, "installing", step=step).status == 200
        seen = shown(pair)
        assert (seen["state"], seen["step"]) == ("installing", step)
    # A log bundle uploaded to A: listed and fetched through B (the shared directory).
    bundle = b"BZh91AY&SY" + bytes(range(256)) * 40
    stored = host.logs(a, bundle)
    assert stored.status == 201, stored
    listing = pair.api_b(f"/api/v1/hosts/{MAC}/logs")
    assert listing.status == 200, listing
    (only,) = listing.json()["bundles"]  # type: ignore[misc]
    assert only["bytes"] == len(bundle)
    assert stored.json()["stored"] == f"logs/{MAC.replace(':', '-')}/{only['name']}"
    fetched = pair.api_b(f"/api/v1/hosts/{MAC}/logs/{only['name']}")
    assert fetched.status == 200
    assert fetched.body == bundle
    assert fetched.headers["content-type"] == "application/x-bzip2"
    assert pair.api_b(f"/api/v1/hosts/{MAC}/logs/20260101T000000.000000Z.tar.bz2").status == 404
    assert pair.api_b(f"/api/v1/hosts/{MAC}/logs/..%2F..%2Fdatabase-url").status == 404
    assert not (pair.a.directory / "logs").exists()
    # The operator's files: one copy, served at /files/ by both.
    shared_files = pair.a.directory.parent / "shared" / "files"
    (shared_files / "post-install.sh").write_text("#!/bin/sh\necho both\n")
    for port in (a, b):
        served = request(port, "GET", "/files/post-install.sh")
        assert (served.status, served.body) == (200, b"#!/bin/sh\necho both\n")
    assert host.event(a, "installed").status == 200
    seen = shown(pair)
    assert (seen["state"], seen["netboot_armed"]) == ("installed", False)
    # Installed through A: B's boot config boots the local disk.
    local = host.boot_config(b)
    assert host.token_of(local) is None
    assert "boots from the local disk" in local
    # First boot through A: running with its version, an agent credential back.
    facts = {"payload_version": VERSION, "hostname": "web1"}
    running = host.event(a, "running", facts=facts)
    assert running.status == 200, running
    host.credential = str(running.json()["agent_credential"])
    seen = shown(pair)
    assert (seen["state"], seen["running_version"], seen["token"]) == ("running", VERSION, "none")
    assert seen["agent_credential"] == "set"
    # The credential issued through A checks in through B.
    assert seen["last_checkin"] is None
    checked = host.checkin(b)
    assert checked.status == 200, checked
    assert shown(pair)["last_checkin"] is not None
    # The install key is retired once running, on both servers.
    assert host.answer_file(b).status == 401
    # Every state the host went through is in its events, in order, whichever server.
    events = [e["state"] for e in shown(pair)["events"]]  # type: ignore[union-attr]
    assert events[-3:] == ["installed", "running", "running"] or events[-2:] == [
        "installed",
        "running",
    ], events
    order = [s for i, s in enumerate(events) if i == 0 or events[i - 1] != s]
    assert order[:5] == ["pending", "signalled", "installing", "installed", "running"], order
    # Nothing went wrong on either server.
    for server in (pair.a, pair.b):
        assert "Traceback" not in server.log_text()
        assert " 500 " not in server.log_text()


def test_the_operator_api_of_b_is_https_only(pair: Pair) -> None:
    token = pair.token_file.read_text().strip()
    plain = request(pair.b.http_port, "GET", "/api/v1/hosts", secret=token)
    assert plain.status == 403
    assert "HTTPS only" in plain.json()["error"]
    # A has no TLS listener: its plain port serves the API (loopback here).
    assert request(pair.a.http_port, "GET", "/api/v1/hosts", secret=token).status == 200


def test_each_server_advertises_its_own_address(pair: Pair) -> None:
    """One registry, two addresses: B's --advertise is B's alone; A, without one, says the
    address it binds."""
    mac = "52:54:00:19:00:02"
    assert pair.cli_b("host", "add", mac).returncode == 0
    host = BootClient(mac)
    b = host.boot_config(pair.b.http_port)
    assert f"http://{B_ADDRESS}:{pair.b.http_port}/" in b, b
    a = host.boot_config(pair.a.http_port)
    assert f"http://127.0.0.1:{pair.a.http_port}/" in a, a
    assert B_ADDRESS not in a


def _console_b(pair: Pair) -> tuple[http.client.HTTPSConnection, str]:
    """A login to B's web console (HTTPS, the test CA): the connection and its cookie."""
    context = ssl.create_default_context(cafile=str(pair.pki.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", pair.b.tls_port, context=context)
    token = pair.token_file.read_text().strip()
    body = urllib.parse.urlencode({"token": token, "next": "/ui/"})
    origin = f"https://127.0.0.1:{pair.b.tls_port}"
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": origin}
    conn.request("POST", "/ui/login", body, headers)
    reply = conn.getresponse()
    reply.read()
    assert reply.status == 303, reply.status
    cookie = reply.getheader("Set-Cookie", "").split(";")[0]
    assert cookie.startswith("netinstall_session=")
    return conn, cookie


def test_bs_console_follows_a_host_that_reports_to_a(pair: Pair) -> None:
    """The console's poll reads the registry: a host installing through A shows on B."""
    a = pair.a.http_port
    assert pair.cli_b("host", "add", MAC, "--name", "web1").returncode == 0
    conn, cookie = _console_b(pair)

    def poll(cursor: int) -> Any:
        conn.request("GET", f"/ui/api/fleet?cursor={cursor}", headers={"Cookie": cookie})
        reply = conn.getresponse()
        data = reply.read()
        assert reply.status == 200, data[:300]
        return json.loads(data)

    try:
        first = poll(0)
        assert first["full"] is True
        assert [r["state"] for r in first["rows"]] == ["pending"]
        host = BootClient(MAC)
        token = host.token_of(host.boot_config(a))
        assert token is not None
        assert host.enrol(a, token).status == 200
        assert host.event(a, "installing", step="partition", progress=0.25).status == 200
        cursor, row = first["cursor"], None
        deadline = time.monotonic() + 10  # A commits a progress event within a moment
        while time.monotonic() < deadline:
            changed = poll(cursor)
            rows = [r for r in changed["rows"] if r["mac"] == MAC]
            if rows and rows[0]["step"] == "partition":
                row = rows[0]
                break
            time.sleep(0.2)
        assert row is not None, "B's console never saw A's progress event"
        assert changed["full"] is False
        assert (row["state"], row["progress"], row["label"]) == ("installing", 25.0, "web1")
    finally:
        conn.close()
    # B's plain port serves no console: it names the https one.
    plain = request(pair.b.http_port, "GET", "/ui/")
    assert plain.status == 403
    assert f"https://{B_ADDRESS}:{pair.b.tls_port}/ui/".encode() in plain.body
