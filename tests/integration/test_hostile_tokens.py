"""A thief on the provisioning LAN against the real server (TFTP + HTTP on loopback) and
the installer's real reporting code (``installer_core.report.ServerReporter``).

Anyone may read a host's boot config over TFTP, so anyone may hold its install token.
That token is an enrolment ticket (docs/protocol.md, "Install tokens"); these tests
prove what it is worth to a thief who uses it before the real installer, and after:
at worst the host is denied its install, loudly (``host list`` shows the conflict);
the thief never holds the host's agent credential while the host runs as if nothing
happened. The thief and the host speak from their own loopback addresses."""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from installer_core.report import KeyRefused, ServerReporter
from pxe_server.model import State
from pxe_server.registry import Registry
from pxe_server.server import Server
from tests.integration.conftest import netinstall

pytestmark = pytest.mark.integration

MAC = "52:54:00:12:34:56"
DASHES = "52-54-00-12-34-56"
HOST_ADDRESS, THIEF_ADDRESS = "127.0.0.10", "127.0.0.66"
_TOKEN = re.compile(r"netinstall\.token=(\S+)")


class FromAddress(HTTPAdapter):
    """Connections from one local address, as a machine on the LAN would make them."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(address))
    return session


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    where = tmp_path / "server"
    netboot = tmp_path / "netboot"
    netboot.mkdir()
    (netboot / "pxelinux.0").write_bytes(b"\x7fpxelinux" * 100)
    for argv in (
        ("server", "init", str(where), "--netboot", str(netboot), "--repo", str(tmp_path)),
        ("host", "add", MAC, "--dir", str(where)),
    ):
        done = netinstall(*argv)
        assert done.returncode == 0, done.stderr
    with Server(where, bind="127.0.0.1", tftp_port=0, http_port=0, dhcp="off") as running:
        yield running


def boot_config(server: Server, source: str) -> str:
    """The host's pxelinux config over TFTP, as any machine on the LAN may read it."""
    done = subprocess.run(
        [
            "curl", "--silent", "--show-error", "--max-time", "20", "--interface", source,
            f"tftp://127.0.0.1:{server.tftp_port}/pxelinux.cfg/01-{DASHES}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    return done.stdout


def token_in(config: str) -> str:
    found = _TOKEN.search(config)
    assert found is not None, config
    return found[1]


def base(server: Server) -> str:
    assert server.settings is not None
    return server.settings.http_base


def installer(server: Server) -> ServerReporter:
    """The real installer's reporter, booted from the host's own config."""
    token = token_in(boot_config(server, HOST_ADDRESS))
    return ServerReporter(
        base(server), MAC, token, session_from(HOST_ADDRESS), attempts=1, sleep=lambda _s: None
    )


class Thief:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.session = session_from(THIEF_ADDRESS)
        self.key = secrets.token_urlsafe(32)

    def post(self, what: str, body: dict[str, object], bearer: str) -> requests.Response:
        url = f"{base(self.server)}/api/v1/hosts/{MAC}/{what}"
        headers = {"Authorization": f"Bearer {bearer}"}
        return self.session.post(url, json=body, headers=headers, timeout=10)

    def enrol(self) -> requests.Response:
        token = token_in(boot_config(self.server, THIEF_ADDRESS))
        return self.post("enrol", {"key": self.key}, token)

    def answer_file(self) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        url = f"{base(self.server)}/answerfile/{MAC}"
        return self.session.get(url, headers=headers, timeout=10)

    def try_to_finish(self) -> tuple[list[int], str | None]:
        """Post installed and running with its key, as a fake installer and first boot:
        the statuses, and the agent credential if it was handed one."""
        codes = [self.post("events", {"state": "installed"}, self.key).status_code]
        running = self.post("events", {"state": "running", "facts": {}}, self.key)
        credential = running.json().get("agent_credential") if running.ok else None
        return [*codes, running.status_code], credential


def first_boot(server: Server, key: str) -> requests.Response:
    """The installed dom0's ``running`` report: the key from its firstboot.json."""
    return session_from(HOST_ADDRESS).post(
        f"{base(server)}/api/v1/hosts/{MAC}/events",
        json={"state": "running", "facts": {"payload_version": "0.1.0"}},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def host_list(server: Server) -> str:
    done = netinstall("host", "list", "--dir", str(server.directory))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_thief_first_is_displaced_by_the_real_boot_and_shown(server: Server) -> None:
    thief = Thief(server)
    assert thief.enrol().status_code == 200  # the ticket was lying in the boot config
    assert thief.answer_file().status_code == 200  # what any boot-config reader could get
    # The real host boots: it fetches its config (a new hand-out) and enrols its own key.
    real = installer(server)
    real.enrol(requests.Session())
    real.event("installing", step="partition", progress=0.3)
    # The thief's key is retired: no answer file, no event, no credential.
    assert thief.answer_file().status_code == 401
    assert thief.try_to_finish() == ([401, 401], None)
    real.event("installed")
    reply = first_boot(server, real.install_key)
    assert reply.status_code == 200
    assert "agent_credential" in reply.json()  # the real host runs, and holds it
    with Registry.open(server.directory) as registry:
        host = registry.get_host(MAC)
    assert host is not None
    assert host.state is State.RUNNING
    assert host.conflict is not None
    assert THIEF_ADDRESS in host.conflict
    assert HOST_ADDRESS in host.conflict
    listed = host_list(server)
    assert "CONFLICT" in listed
    assert THIEF_ADDRESS in listed


def test_a_thief_after_the_real_installer_without_a_new_boot_is_refused(server: Server) -> None:
    thief = Thief(server)
    token = token_in(boot_config(server, THIEF_ADDRESS))  # read earlier, kept for later
    real = installer(server)
    real.enrol(requests.Session())
    real.event("installing", step="download", progress=0.5)
    refused = thief.post("enrol", {"key": thief.key}, token)
    assert refused.status_code == 409
    assert "token" not in refused.json()["error"].split("host ")[0]
    assert thief.try_to_finish() == ([401, 401], None)
    real.event("installed")
    reply = first_boot(server, real.install_key)
    assert reply.status_code == 200
    assert "agent_credential" in reply.json()
    assert "CONFLICT" in host_list(server)


def test_a_thief_after_the_real_installer_with_a_new_boot_stops_it_loudly(
    server: Server,
) -> None:
    real = installer(server)
    real.enrol(requests.Session())
    real.event("installing", step="download", progress=0.5)
    thief = Thief(server)
    assert thief.enrol().status_code == 200  # its TFTP read was a new hand-out
    with pytest.raises(KeyRefused, match="HTTP 401"):
        real.event("installing", step="extract", progress=0.6)  # the real install stops
    assert "CONFLICT" in host_list(server)
    # The host never runs as if nothing happened: its key is dead, its first boot refused.
    assert first_boot(server, real.install_key).status_code == 401
    # Whatever the thief got, the operator's rearm takes back.
    codes, credential = thief.try_to_finish()
    assert codes == [200, 200]
    assert credential is not None
    rearmed = netinstall("host", "rearm", MAC, "--dir", str(server.directory))
    assert rearmed.returncode == 0, rearmed.stderr
    with Registry.open(server.directory) as registry:
        host = registry.get_host(MAC)
    assert host is not None
    assert (host.agent_credential_hash, host.conflict, host.state) == (None, None, State.PENDING)
    checkin = thief.post("checkin", {"running_version": "0.1.0"}, credential)
    assert checkin.status_code == 401
