"""The lab machine's BMC: Redfish (sushy-tools' emulator) or IPMI (pyghmi), over its QEMU.

A scenario with ``bmc`` set (``scenario.Scenario.bmc``) gives the lab machine a BMC that
really switches it: the lab registers the host with ``--bmc`` and a password file, starts
no QEMU itself, and runs ``netinstall host rearm MAC --power`` as an operator would; the
BMC's power-on is what starts the machine.

* Redfish: ``sushy-emulator`` with its fake systems driver, a child of the lab on a free
  loopback port, with its own configuration, user file and state in the run's directory
  and one fake system named after the machine. The driver keeps the power in memory and
  announces every change of a system to ``EXTERNAL_NOTIFICATION_URL`` (a PUT of the
  whole system); it applies a power change 1 to 11 s after it is asked (as hardware
  does), on the next read of the system after that, so the listener reads the system
  at the time the notice names, and the applied change is announced in turn.
* IPMI: ``lab/ipmi_bmc.py``, pyghmi's BMC server class over QEMU's QMP socket, a child
  of the lab on a free loopback UDP port. It announces power-ons and power-offs to the
  same listener in the same shape.

``Notices`` is that listener: an HTTP server on loopback in the lab's process (bounded
requests) that turns each change of the announced power into a ``follow.PowerChange``
(on: QEMU's command line, network first when the boot override is ``Pxe``, disk first
otherwise; off). The ``Follower`` carries them out between two looks at the console, in
the thread that also restarts QEMU after a guest reboot: an "on" while QEMU runs starts
nothing, and a guest reboot (which ends QEMU, ``lab/qemu.py``) is not a power change, so
the BMC's power stays on, as QEMU's is.

The password is random per run, in a file only root reads; the emulator holds its bcrypt
hash, the IPMI BMC reads the file. Neither is shown or logged.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from common.errors import NetinstallError
from netinstall.lab import services
from netinstall.lab.follow import PowerChange

log = logging.getLogger("netinstall.lab")

BmcKind = Literal["redfish", "ipmi"]
BMC_KINDS: tuple[BmcKind, ...] = ("redfish", "ipmi")
USER = "lab"
MAX_NOTICE = 64 * 1024  # bytes of one notice (the fake driver sends a whole system)
MAX_PENDING = 64  # power changes not yet taken by the follower
READY_WITHIN = 30.0  # seconds for a BMC to answer after its start
POKE_MARGIN = 0.5  # seconds after a pending change's apply time before reading it
POKE_TIMEOUT = 10.0
ArgvFor = Callable[[bool], list[str]]  # QEMU's command line, network first (True) or not


def system_uuid(mac: str) -> str:
    """The lab machine's system UUID, the same for the same MAC in every run (pure)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"netinstall-lab:{mac}"))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nobody listens on now (TCP, or UDP with ``SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Notices:
    """The lab's listener for its BMC's notices (loopback, one system, bounded requests).

    ``take`` hands the follower the power changes announced since it last looked. A
    notice with a pending power change (the fake driver's ``pending_power``) makes the
    listener read the system when the change is due (``poke``), so the driver applies it.
    """

    def __init__(
        self,
        system: str,
        argv_for: ArgvFor,
        poke: Callable[[], None] | None,
        switch_off: Callable[[], None] | None = None,
    ) -> None:
        self.system = system
        self.argv_for = argv_for
        self.poke = poke
        self.switch_off = switch_off  # tells the BMC the machine is off (Redfish: ForceOff)
        self.power = "Off"  # the power last announced (the machine starts off)
        self.boot = "Hdd"
        self.notices = 0
        self._changes: list[PowerChange] = []
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="lab BMC notices", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def take(self) -> list[PowerChange]:
        with self._lock:
            taken, self._changes = self._changes, []
        return taken

    def notice(self, body: object) -> str | None:
        """One notice (a JSON value): None once taken in, else why it is refused."""
        if not isinstance(body, dict):
            return "a notice is a JSON object"
        if body.get("uuid") != self.system:
            return "the notice names another system"
        power = body.get("power_state")
        if power not in ("On", "Off"):
            return "the notice's power_state is neither On nor Off"
        boot = body.get("boot_device", self.boot)
        if not isinstance(boot, str):
            return "the notice's boot_device is not a string"
        pending = body.get("pending_power")
        due = pending.get("apply_time") if isinstance(pending, dict) else None
        target = pending.get("power_state") if isinstance(pending, dict) else None
        with self._lock:
            if len(self._changes) >= MAX_PENDING:
                return "too many power changes not yet carried out"
            self.notices += 1
            self.boot = boot
            # A notice of a change still pending names the power before it, unless it is
            # a restart (off at once, on when due). A change to where the machine is
            # already (the BMC told of a guest power-off, ``machine_off``) changes nothing.
            if self.power not in (power, target):
                self.power = power
                network = boot == "Pxe"
                why = f"its BMC powered it {power.lower()}"
                if power == "On":
                    why += f", boot override {boot}: " + (
                        "network first" if network else "disk first"
                    )
                argv = self.argv_for(network) if power == "On" else None
                self._changes.append(PowerChange(power == "On", argv, why))
        if isinstance(due, (int, float)) and self.poke is not None:
            self._poke_at(float(due))
        return None

    def machine_off(self) -> None:
        """The guest powered the machine off by itself (QEMU ended, ``lab/shutdowns.py``):
        the power is off, and the BMC is told so, so that it says off too (the IPMI BMC
        reads QEMU's own state, which is off already)."""
        with self._lock:
            self.power = "Off"
        if self.switch_off is not None:
            threading.Thread(target=self._call, args=(self.switch_off,), daemon=True).start()

    def _poke_at(self, due: float) -> None:
        delay = min(max(due - time.time(), 0.0), 60.0) + POKE_MARGIN
        timer = threading.Timer(delay, self._poke)
        timer.daemon = True
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _poke(self) -> None:
        if self.poke is not None:
            self._call(self.poke)

    @staticmethod
    def _call(what: Callable[[], None]) -> None:
        try:
            what()
        except (OSError, NetinstallError) as exc:  # the run notices a machine left off
            log.warning("lab BMC: %s", exc)

    def close(self) -> None:
        with self._lock:
            timers = list(self._timers)
        for timer in timers:
            timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(notices: Notices) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._answer(411, "a notice needs its Content-Length")
                return
            if not 0 < length <= MAX_NOTICE:
                self._answer(413, f"a notice is 1 to {MAX_NOTICE} bytes")
                return
            try:
                body = json.loads(self.rfile.read(length))
            except (ValueError, UnicodeDecodeError):
                self._answer(400, "a notice is JSON")
                return
            why = notices.notice(body)
            self._answer(400 if why else 204, why)

        do_POST = do_PUT

        def _answer(self, status: int, why: str | None) -> None:
            text = (why or "").encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("lab BMC notice: " + format, *args)

    return Handler


@dataclass
class LabBmc:
    """A running lab BMC: the ``--bmc`` URL to register, its password file, the child
    process and the listener (``stop`` ends both)."""

    kind: BmcKind
    url: str
    password_file: Path
    child: services.Child
    notices: Notices

    def stop(self) -> None:
        self.child.stop()
        self.notices.close()


def start(
    kind: BmcKind, workdir: Path, *, mac: str, name: str, argv_for: ArgvFor, qmp: Path | None
) -> LabBmc:
    """Start the lab machine's BMC of ``kind`` and its listener; the machine is off."""
    system = system_uuid(mac)
    password = secrets.token_urlsafe(18)
    password_file = workdir / "bmc-password"
    password_file.unlink(missing_ok=True)
    descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(password + "\n")
    if kind == "redfish":
        return _start_redfish(
            workdir, system=system, name=name, mac=mac, password=password,
            password_file=password_file, argv_for=argv_for,
        )  # fmt: skip
    if qmp is None:
        raise NetinstallError("the lab's IPMI BMC needs the machine's QMP socket")
    return _start_ipmi(workdir, system, password_file, qmp, argv_for)


def _start_redfish(
    workdir: Path,
    *,
    system: str,
    name: str,
    mac: str,
    password: str,
    password_file: Path,
    argv_for: ArgvFor,
) -> LabBmc:
    emulator = Path(sys.executable).with_name("sushy-emulator")
    if not emulator.is_file():
        raise NetinstallError(
            "the lab's Redfish BMC needs sushy-tools' sushy-emulator (the dev extra: "
            "pip install -e '.[dev]')"
        )
    import bcrypt  # noqa: PLC0415 - sushy-tools' own dependency, with the dev extra

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    system_url = f"{base}/redfish/v1/Systems/{system}"
    users = workdir / "bmc-htpasswd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)).decode()
    users.write_text(f"{USER}:{hashed}\n")
    credentials = base64.b64encode(f"{USER}:{password}".encode()).decode()

    def read_system() -> None:
        request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
            system_url, headers={"Authorization": f"Basic {credentials}"}
        )
        with urllib.request.urlopen(request, timeout=POKE_TIMEOUT) as reply:  # noqa: S310
            reply.read(MAX_NOTICE)

    def force_off() -> None:
        request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
            f"{system_url}/Actions/ComputerSystem.Reset",
            data=json.dumps({"ResetType": "ForceOff"}).encode(),
            headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=POKE_TIMEOUT) as reply:  # noqa: S310
            reply.read(MAX_NOTICE)

    notices = Notices(system, argv_for, read_system, force_off)
    fake = [{"uuid": system, "name": name, "power_state": "Off", "external_notifier": True,
             "nics": [{"mac": mac, "ip": "127.0.0.1"}]}]  # fmt: skip
    config = workdir / "bmc-redfish.conf"
    config.write_text(
        "\n".join([
            "SUSHY_EMULATOR_FAKE_DRIVER = True",
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake!r}",
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'",
            f"SUSHY_EMULATOR_LISTEN_PORT = {port}",
            f"SUSHY_EMULATOR_AUTH_FILE = {str(users)!r}",
            f"SUSHY_EMULATOR_STATE_DIR = {str(workdir / 'bmc-state')!r}",
            f"EXTERNAL_NOTIFICATION_URL = {notices.url!r}",
        ])
        + "\n"
    )  # fmt: skip
    try:
        child = services.Child(
            "Redfish BMC", [str(emulator), "--config", str(config)], workdir / "bmc.log"
        )
    except BaseException:
        notices.close()
        raise
    bmc = LabBmc(
        "redfish",
        f"redfish+http://{USER}@127.0.0.1:{port}/redfish/v1/Systems/{system}",
        password_file,
        child,
        notices,
    )
    try:
        _wait_ready(child, read_system)
    except BaseException:
        bmc.stop()
        raise
    return bmc


def _wait_ready(child: services.Child, read: Callable[[], None]) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while True:
        try:
            read()
        except (OSError, urllib.error.URLError):
            if (code := child.exited()) is not None:
                raise NetinstallError(
                    f"{child.name} exited with status {code} (see {child.log_path})"
                ) from None
            if time.monotonic() > deadline:
                raise NetinstallError(
                    f"{child.name} did not answer in {READY_WITHIN:g} s (see {child.log_path})"
                ) from None
            time.sleep(0.2)
        else:
            return


def _start_ipmi(
    workdir: Path, system: str, password_file: Path, qmp: Path, argv_for: ArgvFor
) -> LabBmc:
    port = free_port(socket.SOCK_DGRAM)
    notices = Notices(system, argv_for, None)
    argv = [
        sys.executable, "-m", "netinstall.lab.ipmi_bmc",
        str(port), USER, str(password_file), str(qmp), notices.url, system,
    ]  # fmt: skip
    try:
        child = services.Child("IPMI BMC", argv, workdir / "bmc.log")
    except BaseException:
        notices.close()
        raise
    bmc = LabBmc("ipmi", f"ipmi://{USER}@127.0.0.1:{port}", password_file, child, notices)
    try:
        from netinstall.lab.ipmi_bmc import READY  # noqa: PLC0415 - pyghmi's import

        child.wait_for(READY, timeout=READY_WITHIN)
    except BaseException:
        bmc.stop()
        raise
    return bmc
