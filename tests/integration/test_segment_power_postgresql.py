"""Power calls through the host's segment server (issue 20): two ``netinstall server run``
processes on one PostgreSQL registry (tests/integration/two_servers.py) and a Redfish BMC
(sushy-emulator, started here on loopback as tests/integration/test_bmc_emulators.py
does). The host boots from server B, so B is its segment server; a power call made to
server A's API is carried out by B: B's log names the request and the BMC it asked, A's
log says it left the request for B and shows no BMC of its own, the reply names B, and
the emulator's system is on. With B killed, a call to A waits its bounded time and is a
504 naming B; once B has not been seen for a while, a 504 at once."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxe_server.segments import ANSWER_WAIT, GONE_AFTER, server_name
from tests.integration.conftest import netinstall
from tests.integration.test_bmc_emulators import PASSWORD, SYSTEM, USER, Emulator, emulator
from tests.integration.two_servers import BootClient, Pair, request, two_servers
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.integration

__all__ = ["emulator"]  # the fixture

MAC = "52:54:00:20:00:01"
LEARNT_WITHIN = 10.0  # seconds: B's desk writes what it learnt every DESK_POLL


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def pair(tmp_path: Path, postgres_url: str, pki: Pki) -> Iterator[Pair]:
    with two_servers(tmp_path, postgres_url, pki) as running:
        # Every server of a registry holds the first one's BMC key (docs/deployment.md).
        shutil.copy(running.a.directory / "bmc-key", running.b.directory / "bmc-key")
        yield running


def cli_a(pair: Pair, *args: str) -> subprocess.CompletedProcess[str]:
    """``netinstall --server http://A ... ARGS``: the operator over A's plain API."""
    return netinstall("--server", pair.a.url, "--token-file", str(pair.token_file), *args)


def power_on_a(pair: Pair, action: str) -> tuple[int, dict[str, Any], float]:
    """``POST /api/v1/hosts/MAC/power`` on A's API: its status, its reply, its seconds."""
    token = pair.token_file.read_text().strip()
    started = time.monotonic()
    reply = request(pair.a.http_port, "POST", f"/api/v1/hosts/{MAC}/power", secret=token,
                    body={"action": action}, timeout=ANSWER_WAIT + 30)  # fmt: skip
    return reply.status, reply.json(), time.monotonic() - started


def segment_of(pair: Pair) -> object:
    done = cli_a(pair, "host", "show", MAC, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["segment_server"]


def test_a_power_call_to_a_is_carried_out_by_the_hosts_segment_server_b(
    pair: Pair, emulator: Emulator, tmp_path: Path
) -> None:
    name_a, name_b = server_name(pair.a.directory), server_name(pair.b.directory)
    assert name_a is not None
    assert name_b is not None
    assert name_a != name_b
    listed = cli_a(pair, "server", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    servers = {s["name"]: s for s in json.loads(listed.stdout)}
    assert set(servers) == {name_a, name_b}
    assert all(s["running"] for s in servers.values())

    (tmp_path / "pw").write_text(PASSWORD + "\n")
    url = f"redfish+http://{USER}@{emulator.base.split('//')[1]}/redfish/v1/Systems/{SYSTEM}"
    added = pair.cli_b("host", "add", MAC, "--bmc", url, "--bmc-password-file",
                       str(tmp_path / "pw"))  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert segment_of(pair) is None  # not served yet: a call would run where it is made
    # The host's network boot is served by B: B is its segment server.
    BootClient(MAC).boot_config(pair.b.http_port)
    deadline = time.monotonic() + LEARNT_WITHIN
    while segment_of(pair) != name_b:
        assert time.monotonic() < deadline, pair.b.log_text()[-3000:]
        time.sleep(0.2)
    shown = cli_a(pair, "host", "show", MAC)
    assert f"segment server:   {name_b}\n" in shown.stdout

    # The operator asks A, with the CLI over A's API: B asks the BMC.
    status = cli_a(pair, "host", "power", MAC, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout == f"{MAC}: power off (through server {name_b}, on its segment)\n"
    code, reply, _ = power_on_a(pair, "on")
    assert code == 200, reply
    assert (reply["was"], reply["via"]) == ("off", name_b)
    seen = emulator.wait_for(lambda s: s["PowerState"] == "On")
    assert seen["PowerState"] == "On"
    log_a, log_b = pair.a.log_text(), pair.b.log_text()
    assert f"host {MAC}: BMC {url}: power is off" in log_b
    assert f"host {MAC}: BMC {url}: was off: powered on" in log_b
    assert f"power request 1 from {name_a} for host {MAC}: answered" in log_b
    assert f"host {MAC}: power status left for its segment server {name_b}" in log_a
    assert f"host {MAC}: BMC" not in log_a  # A never asked the BMC itself
    assert PASSWORD not in log_a + log_b

    # B dies: A's call waits its bounded time, says B did not answer, and withdraws it.
    pair.b.process.send_signal(signal.SIGKILL)
    pair.b.process.wait(timeout=10)
    killed = time.monotonic()
    code, reply, took = power_on_a(pair, "off")
    assert code == 504, reply
    assert ANSWER_WAIT - 1 <= took < ANSWER_WAIT + 10
    assert reply["error"] == (
        f"host {MAC}'s segment server {name_b} did not answer its power request within "
        f"{ANSWER_WAIT:.0f} s; it was withdrawn"
    )
    # Not seen for GONE_AFTER seconds now: said at once.
    assert time.monotonic() - killed > GONE_AFTER
    code, reply, took = power_on_a(pair, "status")
    assert code == 504, reply
    assert took < 3
    assert str(reply["error"]).startswith(f"host {MAC}'s segment server {name_b} was last seen ")
    assert emulator.system()["PowerState"] == "On"  # nobody powered it off late
    listed = cli_a(pair, "server", "list")
    assert any(
        line.startswith(name_b) and "not seen lately" in line for line in listed.stdout.splitlines()
    ), listed.stdout
    # The operator pins the host to A (its BMC reachable from A too, here): A asks it.
    pinned = cli_a(pair, "host", "set", MAC, "--server", name_a)
    assert pinned.returncode == 0, pinned.stderr
    status = cli_a(pair, "host", "power", MAC, "status")
    assert (status.returncode, status.stdout) == (0, f"{MAC}: power on\n"), status.stderr
