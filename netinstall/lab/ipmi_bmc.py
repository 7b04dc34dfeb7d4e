"""The lab machine's IPMI BMC: pyghmi's BMC server class over the machine's QEMU, as
virtualbmc is over a libvirt domain. It runs as a child of the lab (``lab/bmc.py``):

    python -m netinstall.lab.ipmi_bmc PORT USER PASSWORD_FILE QMP_SOCKET NOTIFY_URL UUID

It listens on 127.0.0.1:PORT (UDP, IPMI 2.0 over LAN) and prints ``READY`` once it does.
The power it reports is QEMU's own: on while QEMU answers ``query-status`` on its QMP
socket, off otherwise. A reset goes to QEMU as ``system_reset`` (the lab's machines end
QEMU on a reset, and the lab starts it again: a power cycle). A power-on or a power-off
is the lab's to carry out, since the lab owns the QEMU process: the BMC announces it to
the lab's listener (``NOTIFY_URL``) in the shape sushy-tools' fake Redfish driver uses,
``{"uuid": ..., "power_state": "On"|"Off", "boot_device": "Pxe"|"Hdd"}``. A boot device
set to the network holds for the next power-on or reset only, as IPMI's boot flags do.

pyghmi's sessions share one I/O loop per process, so the BMC has a process of its own,
apart from any pyghmi client (the operator's ``netinstall host power``).
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.request
import uuid as uuids
from pathlib import Path
from typing import Any

from pyghmi.ipmi import bmc
from pyghmi.ipmi.private import serversession

READY = "READY"
_SHA1 = 1  # RAKP-HMAC-SHA1, the one authentication algorithm pyghmi's server speaks
_INVALID_AUTHENTICATION_ALGORITHM = 0x11  # an RMCP+ status code
_NOT_IN_PRESENT_STATE = 0xD5  # an IPMI completion code: a machine that is off is not reset
QMP_TIMEOUT = 2.0  # seconds for one QMP exchange
MAX_QMP_LINE = 65536  # bytes of one QMP reply line
MAX_QMP_LINES = 32  # lines read for one reply (events may come first)
NOTIFY_TIMEOUT = 5.0


class Sha1Session(serversession.ServerSession):  # type: ignore[misc]
    """pyghmi's server session, which answers every open-session request with cipher
    suite 3 (SHA-1) whatever the client proposed: here it refuses another proposal, as a
    BMC that speaks only suite 3 does, so that the client falls back to SHA-1 (pyghmi's
    client proposes SHA-256 first)."""

    def create_open_session_response(self, request: bytearray) -> bytearray:
        if len(request) > 12 and request[12] != _SHA1:
            self.clientsessionid = request[4:8]
            return bytearray([request[0], _INVALID_AUTHENTICATION_ALGORITHM, 0, 0]) + bytearray(
                request[4:8]
            )
        return super().create_open_session_response(request)  # type: ignore[no-any-return]


# The server makes its sessions by this module-level name (IpmiServer.sessionless_data).
serversession.ServerSession = Sha1Session


def qmp(path: Path, command: str, timeout: float = QMP_TIMEOUT) -> dict[str, Any] | None:
    """One QMP command on ``path``: its ``return`` (an object), or None when no QEMU
    answers there (no socket, nobody listening, an error or no reply in time)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            stream = sock.makefile("rwb")
            stream.readline(MAX_QMP_LINE)  # the greeting
            for execute in ("qmp_capabilities", command):
                stream.write(json.dumps({"execute": execute}).encode() + b"\n")
                stream.flush()
                reply = _reply(stream)
                if reply is None:
                    return None
            return reply
    except (OSError, ValueError):
        return None


def _reply(stream: Any) -> dict[str, Any] | None:
    for _ in range(MAX_QMP_LINES):
        line = stream.readline(MAX_QMP_LINE)
        if not line:
            return None
        message = json.loads(line)
        if isinstance(message, dict) and "return" in message:
            found = message["return"]
            return found if isinstance(found, dict) else {}
        if isinstance(message, dict) and "error" in message:
            return None
    return None


class QemuBmc(bmc.Bmc):  # type: ignore[misc]
    """The lab machine's BMC: the power is QEMU's, changes go to QEMU or to the lab."""

    def __init__(
        self, authdata: dict[str, str], port: int, qmp_socket: Path, notify: str, uuid: str
    ) -> None:
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.qmp_socket = qmp_socket
        self.notify = notify
        self.system = uuid
        self.uuid = uuids.UUID(uuid)  # pyghmi's: the system GUID it answers with
        self.boot = "default"  # "network" once set, until the next power-on or reset

    def _announce(self, power: str) -> None:
        notice = {
            "uuid": self.system,
            "power_state": power,
            "boot_device": "Pxe" if self.boot == "network" else "Hdd",
        }
        request = urllib.request.Request(  # noqa: S310 - the lab's listener on loopback
            self.notify,
            data=json.dumps(notice).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=NOTIFY_TIMEOUT):  # noqa: S310 - loopback
            pass
        self.boot = "default" if power == "On" else self.boot

    def get_power_state(self) -> str:
        found = qmp(self.qmp_socket, "query-status")
        return "on" if found is not None and found.get("status") != "shutdown" else "off"

    def is_active(self) -> bool:
        return self.get_power_state() == "on"

    def power_on(self) -> int:
        if not self.is_active():
            self._announce("On")
        return 0

    def power_off(self) -> int:
        if self.is_active():
            self._announce("Off")
        return 0

    power_shutdown = power_off

    def power_reset(self) -> int:
        if not self.is_active():
            return _NOT_IN_PRESENT_STATE
        if self.boot == "network":  # the next boot from the network: off, then on so
            self._announce("Off")
            self._announce("On")
        elif qmp(self.qmp_socket, "system_reset") is None:
            return _NOT_IN_PRESENT_STATE
        return 0

    power_cycle = power_reset

    def get_boot_device(self) -> str:
        return self.boot

    def set_boot_device(self, bootdevice: str) -> None:
        self.boot = "network" if bootdevice == "network" else "default"


def main() -> None:
    port, user, password_file, qmp_socket, notify, uuid = sys.argv[1:7]
    password = Path(password_file).read_text("utf-8").strip()
    server = QemuBmc({user: password}, int(port), Path(qmp_socket), notify, uuid)
    print(READY, flush=True)
    server.listen()


if __name__ == "__main__":
    main()
