"""Power control against real BMC emulators on loopback, each started and stopped here:
sushy-tools' Redfish emulator (``sushy-emulator``, its fake systems driver) with HTTP basic
auth, plain and over TLS, and a lab IPMI BMC on pyghmi's BMC server class
(tests/integration/ipmi_bmc.py). The commands are the operator's, on the server directory
and over the API; what they did is read back from the emulator's own state. A wrong
password, a certificate nobody vouched for and a BMC that never answers are one sentence
each, and quick.

The fake driver applies a power change 1 to 11 s after it is asked (as hardware does):
the tests wait for the emulator to show it. It keeps a boot override's target (Pxe) but
not its "Once" (it reports every override as Continuous), so the target is what is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
from click.testing import CliRunner

from common.protocol.messages import PowerAction, PowerState
from netinstall.cli import main
from pxe_server.bmc import BmcAccess, open_bmc
from pxe_server.bmc_url import BmcError, parse_bmc_url
from tests.integration.test_remote_cli import Twins, pki, twins
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.integration

__all__ = ["pki", "twins"]  # the fixtures, for the API's tests

MAC = "52:54:00:00:0b:01"
OTHER_MAC = "52:54:00:00:0b:02"  # a host without a BMC
USER = "admin"
PASSWORD = "Bmc-pass-7731"
SYSTEM = "27946b59-9e44-4fa7-8e91-f3527a1ef094"
BIN = Path(sys.executable).parent
APPLIED_WITHIN = 20.0  # seconds: the fake driver's delay (11 s at most) and a margin


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(main, list(args), env={"NETINSTALL_SERVER": None})
    return done.exit_code, done.stdout, done.stderr


@dataclass
class Emulator:
    """A running sushy-emulator: its base URL, how to read a system, its log."""

    base: str
    verify: bool | str
    log: Path

    def system(self) -> dict[str, Any]:
        reply = requests.get(
            f"{self.base}/redfish/v1/Systems/{SYSTEM}",
            auth=(USER, PASSWORD),
            verify=self.verify,
            timeout=5,
        )
        reply.raise_for_status()
        found: dict[str, Any] = reply.json()
        return found

    def wait_for(self, what: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + APPLIED_WITHIN
        while True:
            seen = self.system()
            if what(seen) or time.monotonic() > deadline:
                return seen
            time.sleep(0.5)


def _start_emulator(
    tmp_path: Path, tls: Pki | None, extra: tuple[str, ...] = ()
) -> Iterator[Emulator]:
    port = free_port()
    users = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    users.write_text(f"{USER}:{hashed}\n")
    systems = [{"uuid": SYSTEM, "name": "host1", "power_state": "Off",
                "external_notifier": False, "nics": [{"mac": MAC, "ip": "127.0.0.1"}]}]  # fmt: skip
    if "two systems" in extra:
        extra = tuple(e for e in extra if e != "two systems")
        systems.append({"uuid": "5f6a1c2e-0d43-4b8e-9a51-2c7be0a1d3f4", "name": "host2",
                        "power_state": "Off", "external_notifier": False, "nics": []})  # fmt: skip
    lines = [
        "SUSHY_EMULATOR_FAKE_DRIVER = True",
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}",
        "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'",
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}",
        f"SUSHY_EMULATOR_AUTH_FILE = {str(users)!r}",
        # The fake driver keeps its systems in a database there (default: /tmp, shared).
        f"SUSHY_EMULATOR_STATE_DIR = {str(tmp_path / 'emulator-state')!r}",
        *extra,
    ]
    if tls is not None:
        lines += [f"SUSHY_EMULATOR_SSL_CERT = {str(tls.cert)!r}",
                  f"SUSHY_EMULATOR_SSL_KEY = {str(tls.key)!r}"]  # fmt: skip
    config = tmp_path / "emulator.conf"
    config.write_text("\n".join(lines) + "\n")
    log = tmp_path / "emulator.log"
    scheme = "https" if tls else "http"
    emulator = Emulator(f"{scheme}://127.0.0.1:{port}", str(tls.ca) if tls else True, log)
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "sushy-emulator"), "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                emulator.system()
                break
            except requests.RequestException:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "sushy-emulator did not start in 30 s"
                time.sleep(0.2)
        yield emulator
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    """sushy-emulator on plain HTTP with basic auth."""
    yield from _start_emulator(tmp_path, None)


@pytest.fixture
def stubborn_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """sushy-emulator that refuses to power a system off (a BMC's refusal, its message)."""
    yield from _start_emulator(tmp_path, None, ("SUSHY_EMULATOR_DISABLE_POWER_OFF = True",))


@pytest.fixture
def chassis_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """sushy-emulator managing two systems (a blade chassis' BMC, say)."""
    yield from _start_emulator(tmp_path, None, ("two systems",))


@pytest.fixture
def tls_emulator(tmp_path: Path) -> Iterator[tuple[Emulator, Pki]]:
    """sushy-emulator over TLS (a throwaway CA's certificate for 127.0.0.1)."""
    made = make_pki(tmp_path / "pki")
    for emulator in _start_emulator(tmp_path, made):
        yield emulator, made


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    where = tmp_path / "srv"
    code, _, err = run("server", "init", str(where))
    assert code == 0, err
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "wrong").write_text("not-the-password\n")
    return where


def _no_password_anywhere(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text


# -- Redfish ------------------------------------------------------------------------------


def test_redfish_power_and_network_boot_once_as_the_emulator_sees_them(
    emulator: Emulator, server_dir: Path, tmp_path: Path
) -> None:
    url = f"redfish+http://{USER}@{emulator.base.split('//')[1]}/redfish/v1/Systems/{SYSTEM}"
    where = ("--dir", str(server_dir))
    code, out, err = run("host", "add", MAC, *where, "--bmc", url,
                         "--bmc-password-file", str(tmp_path / "pw"))  # fmt: skip
    assert code == 0, err
    said = [out]
    code, out, err = run("host", "power", MAC, "status", *where)
    assert (code, out) == (0, f"{MAC}: power off\n"), err
    code, out, err = run("host", "rearm", MAC, "--power", *where)
    assert code == 0, err
    assert out.splitlines()[1:] == [
        f"{MAC}: next boot set to the network, once",
        f"{MAC}: was off: powered on",
    ]
    seen = emulator.wait_for(lambda s: s["PowerState"] == "On")
    assert (seen["PowerState"], seen["Boot"]["BootSourceOverrideTarget"]) == ("On", "Pxe")
    code, out, err = run("host", "power", MAC, "off", *where)
    assert (code, out) == (0, f"{MAC}: powered off\n"), err
    assert emulator.wait_for(lambda s: s["PowerState"] == "Off")["PowerState"] == "Off"
    code, out, err = run("host", "power", MAC, "on", *where)
    assert (code, out) == (0, f"{MAC}: was off: powered on\n"), err
    assert emulator.wait_for(lambda s: s["PowerState"] == "On")["PowerState"] == "On"
    code, out, err = run("host", "power", MAC, "cycle", *where)
    assert (code, out) == (0, f"{MAC}: was on: power cycled (on now)\n"), err
    # ForceRestart: the fake driver turns it off at once and on again later.
    assert emulator.wait_for(lambda s: s["PowerState"] == "On")["PowerState"] == "On"
    said.append(out)
    _no_password_anywhere(*said, emulator.log.read_text())


def test_a_wrong_redfish_password_is_one_sentence(
    emulator: Emulator, server_dir: Path, tmp_path: Path
) -> None:
    url = f"redfish+http://{USER}@{emulator.base.split('//')[1]}"
    run("host", "add", MAC, "--dir", str(server_dir), "--bmc", url,
        "--bmc-password-file", str(tmp_path / "wrong"))  # fmt: skip
    started = time.monotonic()
    code, out, err = run("host", "power", MAC, "status", "--dir", str(server_dir))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"netinstall: the Redfish BMC {url} refused the login of 'admin': wrong user or password"
    ]
    assert time.monotonic() - started < 10


def test_redfish_over_tls_is_verified_with_the_ca_file_refused_without_or_insecure(
    tls_emulator: tuple[Emulator, Pki], server_dir: Path, tmp_path: Path
) -> None:
    emulator, made = tls_emulator
    url = f"redfish://{USER}@{emulator.base.split('//')[1]}"
    where = ("--dir", str(server_dir))
    pw = ("--bmc-password-file", str(tmp_path / "pw"))
    assert run("host", "add", MAC, *where, "--bmc", url, *pw)[0] == 0
    code, out, err = run("host", "power", MAC, "status", *where)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"netinstall: TLS verification of the Redfish BMC {url} failed: give its CA "
        "certificate with --bmc-ca-file (or --bmc-insecure)"
    ]
    other = make_pki(tmp_path / "other-ca")
    assert (
        run("host", "set", MAC, *where, "--bmc", url, *pw, "--bmc-ca-file", str(other.ca))[0] == 0
    )
    code, _, err = run("host", "power", MAC, "status", *where)
    assert code == 2
    assert "the certificates of --bmc-ca-file do not verify it" in err
    assert run("host", "set", MAC, *where, "--bmc", url, *pw, "--bmc-ca-file", str(made.ca))[0] == 0
    assert run("host", "power", MAC, "status", *where)[1] == f"{MAC}: power off\n"
    code, out, err = run("host", "set", MAC, *where, "--bmc", url, *pw, "--bmc-insecure")
    assert code == 0, err
    assert run("host", "power", MAC, "status", *where)[1] == f"{MAC}: power off\n"
    shown = run("host", "show", MAC, *where)[1]
    assert f"bmc:              {url}, password set, insecure: yes" in shown


def test_an_action_the_redfish_bmc_refuses_is_its_own_message_cut_short(
    stubborn_emulator: Emulator, server_dir: Path, tmp_path: Path
) -> None:
    url = f"redfish+http://{USER}@{stubborn_emulator.base.split('//')[1]}"
    where = ("--dir", str(server_dir))
    run("host", "add", MAC, *where, "--bmc", url, "--bmc-password-file", str(tmp_path / "pw"))
    assert run("host", "power", MAC, "on", *where)[0] == 0
    assert stubborn_emulator.wait_for(lambda s: s["PowerState"] == "On")["PowerState"] == "On"
    code, out, err = run("host", "power", MAC, "off", *where)
    assert (code, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith(
        f"netinstall: the Redfish BMC {url} refused to power the host off: Can not request "
        "power off transition."
    )
    assert len(line) < 400
    assert stubborn_emulator.system()["PowerState"] == "On"


def test_a_bmc_of_several_systems_needs_the_system_in_the_url(
    chassis_emulator: Emulator, server_dir: Path, tmp_path: Path
) -> None:
    address = chassis_emulator.base.split("//")[1]
    url = f"redfish+http://{USER}@{address}"
    where = ("--dir", str(server_dir))
    run("host", "add", MAC, *where, "--bmc", url, "--bmc-password-file", str(tmp_path / "pw"))
    code, _, err = run("host", "power", MAC, "status", *where)
    assert code == 2
    assert err.splitlines() == [
        f"netinstall: the Redfish BMC {url} does not manage exactly one system: name it in the "
        f"URL ({url}/redfish/v1/Systems/ID)"
    ]
    named = f"{url}/redfish/v1/Systems/{SYSTEM}"
    run("host", "set", MAC, *where, "--bmc", named, "--bmc-password-file", str(tmp_path / "pw"))
    assert run("host", "power", MAC, "status", *where)[1] == f"{MAC}: power off\n"


class _Wrong(http.server.BaseHTTPRequestHandler):
    """A "BMC" whose every reply is ``body`` (JSON's content type, whatever it holds)."""

    body = b""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client stops reading a reply too large
            self.wfile.write(self.body)

    do_POST = do_GET


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"<html>a login page</html>", "Expecting value: line 1 column 1 (char 0)"),
        (b'{"Name": "no service root"}', "The attribute Id is missing from the resource "
         "/redfish/v1/"),
        (b"[" * (5 << 20), "a reply of 5242880 bytes, more than 4194304"),
    ],
)  # fmt: skip
def test_a_bmc_that_answers_wrongly_is_one_sentence(body: bytes, said: str) -> None:
    handler = type("Wrong", (_Wrong,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"redfish+http://{USER}@127.0.0.1:{server.server_address[1]}"
        with pytest.raises(BmcError) as caught, open_bmc(BmcAccess(parse_bmc_url(url), PASSWORD)):
            pass
    finally:
        server.shutdown()
        server.server_close()
    assert caught.value.problems == (f"the Redfish BMC {url} gave a reply that is not "
                                     f"Redfish's: {said}",)  # fmt: skip


def test_a_bmc_that_never_answers_ends_in_the_timeouts_sentence_quickly() -> None:
    """A socket that accepts and stays silent: the read timeout, twice (the retry of a
    request the network lost), then one sentence."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        access = BmcAccess(parse_bmc_url(f"redfish+http://{USER}@127.0.0.1:{port}"),
                           PASSWORD, timeout=1.0)  # fmt: skip
        started = time.monotonic()
        with pytest.raises(BmcError) as caught, open_bmc(access):
            pass
        took = time.monotonic() - started
    assert caught.value.problems == (
        f"the Redfish BMC redfish+http://{USER}@127.0.0.1:{port} did not answer within 1 s",
    )
    assert took < 6


def test_power_over_the_api_is_the_same_and_a_bmc_failure_is_a_502(
    emulator: Emulator, twins: Twins, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server asked makes the call: the same output over the API as on its directory;
    a BMC's refusal is its sentence, the password never in a reply or a log line (the
    server runs in this process: its log, sushy's and pyghmi's are caplog's)."""
    caplog.set_level(logging.DEBUG)
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    url = f"redfish+http://{USER}@{emulator.base.split('//')[1]}/redfish/v1/Systems/{SYSTEM}"
    added = twins.over_api("host", "add", MAC, "--bmc", url, "--bmc-password-file",
                           str(tmp_path / "pw"))  # fmt: skip
    assert added.code == 0, added.err
    status = twins.over_api("host", "power", MAC, "status")
    assert (status.code, status.out) == (0, f"{MAC}: power off\n"), status.err
    rearmed = twins.over_api("host", "rearm", MAC, "--power")
    assert rearmed.out.splitlines()[1:] == [
        f"{MAC}: next boot set to the network, once",
        f"{MAC}: was off: powered on",
    ], rearmed.err
    seen = emulator.wait_for(lambda s: s["PowerState"] == "On")
    assert (seen["PowerState"], seen["Boot"]["BootSourceOverrideTarget"]) == ("On", "Pxe")
    shown = twins.over_api("host", "show", MAC, "--json")
    assert json.loads(shown.out)["bmc"] == {"url": url, "password": "set", "ca": False,
                                             "insecure": False}  # fmt: skip
    (tmp_path / "wrong").write_text("wrong\n")
    assert twins.over_api("host", "set", MAC, "--bmc", url, "--bmc-password-file",
                          str(tmp_path / "wrong")).code == 0  # fmt: skip
    refused = twins.over_api("host", "power", MAC, "on")
    assert refused.code == 1
    assert refused.err.splitlines()[-1] == (
        f"netinstall: the Redfish BMC {url} refused the login of 'admin': wrong user or password"
    )
    events = twins.over_api("host", "show", MAC)
    removed = twins.over_api("host", "set", MAC, "--no-bmc")
    assert (removed.code, "BMC none" in removed.out) == (0, True), removed.err
    gone = twins.over_api("host", "power", MAC, "status")
    assert gone.err.splitlines()[-1] == (
        f"netinstall: host {MAC} has no BMC; give it one with "
        f"`netinstall host set {MAC} --bmc URL --bmc-password-file FILE`"
    )
    _no_password_anywhere(added.out, added.err, shown.out, refused.err, events.out, caplog.text)
    assert f"BMC {url}: power is off" in caplog.text  # what was logged, without it


# -- IPMI ---------------------------------------------------------------------------------


@dataclass
class LabIpmi:
    port: int
    state_file: Path

    def state(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.state_file.read_text())
        return found


@pytest.fixture
def ipmi(tmp_path: Path) -> Iterator[LabIpmi]:
    """The lab IPMI BMC (pyghmi's BMC server class) on a loopback UDP port."""
    port = free_port(socket.SOCK_DGRAM)
    state = tmp_path / "ipmi-state.json"
    log = tmp_path / "ipmi.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.ipmi_bmc", str(port), USER, PASSWORD,
             str(state)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=Path(__file__).parents[2],
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not state.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the lab IPMI BMC did not start in 15 s"
            time.sleep(0.1)
        yield LabIpmi(port, state)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_ipmi_power_and_network_boot_as_the_lab_bmc_sees_them(
    ipmi: LabIpmi, server_dir: Path, tmp_path: Path
) -> None:
    where = ("--dir", str(server_dir))
    url = f"ipmi://{USER}@127.0.0.1:{ipmi.port}"
    code, _, err = run("host", "add", MAC, *where, "--bmc", url,
                       "--bmc-password-file", str(tmp_path / "pw"))  # fmt: skip
    assert code == 0, err
    assert run("host", "power", MAC, "status", *where)[1] == f"{MAC}: power off\n"
    code, out, err = run("host", "rearm", MAC, "--power", *where)
    assert code == 0, err
    assert out.splitlines()[1:] == [
        f"{MAC}: next boot set to the network, once",
        f"{MAC}: was off: powered on",
    ]
    assert ipmi.state() == {"power": "on", "boot": "network", "cycles": 0}
    assert (
        run("host", "power", MAC, "cycle", *where)[1] == f"{MAC}: was on: power cycled (on now)\n"
    )
    assert ipmi.state()["cycles"] == 1
    assert run("host", "power", MAC, "off", *where)[1] == f"{MAC}: powered off\n"
    assert ipmi.state()["power"] == "off"
    assert run("host", "power", MAC, "cycle", *where)[1] == f"{MAC}: was off: powered on\n"
    assert ipmi.state() == {"power": "on", "boot": "network", "cycles": 1}


def test_a_wrong_ipmi_password_and_an_unknown_user_are_one_sentence_each(
    ipmi: LabIpmi, server_dir: Path, tmp_path: Path
) -> None:
    where = ("--dir", str(server_dir))
    url = f"ipmi://{USER}@127.0.0.1:{ipmi.port}"
    run("host", "add", MAC, *where, "--bmc", url, "--bmc-password-file", str(tmp_path / "wrong"))
    code, _, err = run("host", "power", MAC, "on", *where)
    assert code == 2
    assert err.splitlines() == [
        f"netinstall: the IPMI BMC {url} refused the login of 'admin': wrong user or password"
    ]
    assert ipmi.state()["power"] == "off"
    # The lab BMC, as pyghmi's server class does, ignores a user it does not know.
    stranger = BmcAccess(parse_bmc_url(f"ipmi://nobody@127.0.0.1:{ipmi.port}"), PASSWORD,
                         timeout=1.0)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(BmcError) as caught, open_bmc(stranger):
        pass
    assert time.monotonic() - started < 4
    assert caught.value.problems == (
        f"the IPMI BMC ipmi://nobody@127.0.0.1:{ipmi.port} did not log us in within 2 s (an "
        f"unknown user, or no BMC on UDP port {ipmi.port})",
    )


def test_upgrade_of_a_host_that_is_off_powers_it_on_first(
    ipmi: LabIpmi, server_dir: Path, tmp_path: Path
) -> None:
    from pxe_server.registry import Registry

    where = ("--dir", str(server_dir))
    url = f"ipmi://{USER}@127.0.0.1:{ipmi.port}"
    assert run("host", "add", MAC, *where, "--bmc", url,
               "--bmc-password-file", str(tmp_path / "pw"))[0] == 0  # fmt: skip
    with Registry.open(server_dir) as registry:  # agent work needs an installed host
        from common.protocol.messages import State

        for state in (State.SIGNALLED, State.INSTALLING, State.INSTALLED, State.RUNNING):
            registry.record_event(MAC, state)
    code, out, err = run("host", "restore", MAC, *where)
    assert code == 0, err
    assert out.splitlines()[-1] == (
        f"{MAC} was off: powered on through its BMC for its agent to check in"
    )
    assert ipmi.state()["power"] == "on"
    code, out, err = run("host", "restore", MAC, *where)
    assert out.splitlines()[-1] == f"{MAC} is on (its BMC says so)", err


def test_the_apis_restore_powers_an_off_host_on_and_says_so(
    ipmi: LabIpmi, twins: Twins, tmp_path: Path
) -> None:
    """The API's upgrade and restore routes power an off host on themselves (as pool
    jobs and the console do): the CLI over the API prints what the server's reply says."""
    from common.protocol.messages import State
    from pxe_server.registry import Registry

    (tmp_path / "pw").write_text(PASSWORD + "\n")
    url = f"ipmi://{USER}@127.0.0.1:{ipmi.port}"
    added = twins.over_api("host", "add", MAC, "--bmc", url, "--bmc-password-file",
                           str(tmp_path / "pw"))  # fmt: skip
    assert added.code == 0, added.err
    with Registry.open(twins.remote) as registry:  # agent work needs a running host
        for state in (State.SIGNALLED, State.INSTALLING, State.INSTALLED, State.RUNNING):
            registry.record_event(MAC, state)
    restored = twins.over_api("host", "restore", MAC)
    assert restored.code == 0, restored.err
    assert restored.out.splitlines()[-1] == (
        f"{MAC} was off: powered on through its BMC for its agent to check in"
    )
    assert ipmi.state()["power"] == "on"
    shown = twins.over_api("host", "show", MAC, "--json")
    assert json.loads(shown.out)["power_on"] is None  # said in the work's reply only


def test_the_bmc_client_reports_power_states_directly(ipmi: LabIpmi) -> None:
    access = BmcAccess(parse_bmc_url(f"ipmi://{USER}@127.0.0.1:{ipmi.port}"), PASSWORD)
    with open_bmc(access) as bmc:
        assert bmc.status() is PowerState.OFF
        assert bmc.power(PowerAction.BOOT) is PowerState.ON
        assert bmc.power(PowerAction.STATUS) is PowerState.ON
    assert ipmi.state()["power"] == "on"


def test_no_ipmi_bmc_on_the_port_is_one_sentence_quickly() -> None:
    port = free_port(socket.SOCK_DGRAM)
    access = BmcAccess(parse_bmc_url(f"ipmi://{USER}@127.0.0.1:{port}"), PASSWORD, timeout=2.0)
    started = time.monotonic()
    with pytest.raises(BmcError) as caught, open_bmc(access):
        pass
    assert time.monotonic() - started < 10
    (said,) = caught.value.problems
    assert said.startswith(f"the IPMI BMC ipmi://{USER}@127.0.0.1:{port} did not ")
    assert said.endswith(f"UDP port {port})")


# -- the web console ----------------------------------------------------------------------


def test_the_web_console_powers_a_host_through_its_bmc(
    emulator: Emulator, server_dir: Path, tmp_path: Path
) -> None:
    """The host page offers power only with a BMC; each action, confirmed with the
    session's CSRF token, is what the emulator sees; a BMC that refuses is a 502 page
    with its sentence, never the password."""
    from pxe_server.model import State
    from pxe_server.registry import Registry
    from tests.unit.test_web_console import Browser, api_token, browse, context

    url = f"redfish+http://{USER}@{emulator.base.split('//')[1]}/redfish/v1/Systems/{SYSTEM}"
    where = ("--dir", str(server_dir))
    assert run("host", "add", OTHER_MAC, *where)[0] == 0  # no BMC: no power offered
    code, _, err = run("host", "add", MAC, *where, "--bmc", url,
                       "--bmc-password-file", str(tmp_path / "pw"))  # fmt: skip
    assert code == 0, err

    async def script(browser: Browser) -> dict[str, Any]:
        await browser.login(api_token(registry))
        csrf = await browser.csrf()
        seen: dict[str, Any] = {
            "page": await browser.send("GET", f"/ui/hosts/{MAC}"),
            "plain": await browser.send("GET", f"/ui/hosts/{OTHER_MAC}"),
            "confirm": await browser.send("GET", f"/ui/hosts/{MAC}/rearm-power"),
            "none": await browser.send("POST", f"/ui/hosts/{OTHER_MAC}/power-on", {"csrf": csrf}),
            "boot": await browser.send("POST", f"/ui/hosts/{MAC}/rearm-power", {"csrf": csrf}),
        }
        seen["rearmed"] = registry.get_host(MAC)
        seen["on"] = await asyncio.to_thread(emulator.wait_for, lambda s: s["PowerState"] == "On")
        seen["off"] = await browser.send("POST", f"/ui/hosts/{MAC}/power-off", {"csrf": csrf})
        seen["off-state"] = await asyncio.to_thread(
            emulator.wait_for, lambda s: s["PowerState"] == "Off"
        )
        (tmp_path / "wrong").write_text("not-the-password\n")
        assert run("host", "set", MAC, *where, "--bmc", url,
                   "--bmc-password-file", str(tmp_path / "wrong"))[0] == 0  # fmt: skip
        seen["refused"] = await browser.send("POST", f"/ui/hosts/{MAC}/power-on", {"csrf": csrf})
        # A restore given to a host that is off (its agent has reported running): the
        # console powers it on, for its agent to check in.
        assert run("host", "set", MAC, *where, "--bmc", url,
                   "--bmc-password-file", str(tmp_path / "pw"))[0] == 0  # fmt: skip
        registry.record_event(MAC, State.INSTALLED)
        registry.record_event(MAC, State.RUNNING, facts={"payload_version": "0.1.0"})
        restored = await browser.send("POST", f"/ui/hosts/{MAC}/restore", {"csrf": csrf})
        seen["restore"] = restored
        seen["restored"] = await browser.send("GET", restored.headers["Location"])
        seen["restore-state"] = await asyncio.to_thread(
            emulator.wait_for, lambda s: s["PowerState"] == "On"
        )
        return seen

    with Registry.open(server_dir) as registry:
        seen = browse(context(registry), script)
    host = seen["rearmed"]
    assert 'id="power"' in seen["page"].text
    assert url in seen["page"].text
    assert f'href="/ui/hosts/{MAC}/power-cycle"' in seen["page"].text
    assert 'id="power"' not in seen["plain"].text
    assert "its next boot set to the network once" in seen["confirm"].text
    assert seen["none"].status == 400
    assert "has no BMC" in seen["none"].text
    assert seen["boot"].status == 303
    assert seen["boot"].headers["Location"] == f"/ui/hosts/{MAC}?done=rearm-power"
    assert seen["on"]["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    assert host is not None
    assert (host.state.value, host.netboot_armed) == ("pending", True)
    assert seen["off"].status == 303
    assert seen["off-state"]["PowerState"] == "Off"
    assert seen["refused"].status == 502
    assert "wrong user or password" in seen["refused"].text
    assert seen["restore"].headers["Location"] == f"/ui/hosts/{MAC}?done=restore&power=was-off"
    assert "It was off: powered on through its BMC." in seen["restored"].text
    assert seen["restore-state"]["PowerState"] == "On"
    _no_password_anywhere(*(r.text for r in seen.values() if hasattr(r, "text")))
