"""Why a lab machine's QEMU ended: its ``SHUTDOWN`` event on a QMP socket of the lab's own.

The lab's machines end QEMU on a guest reboot (``-action reboot=shutdown``, lab/qemu.py)
as on a guest power-off, with the same exit status. A machine with a BMC must tell them
apart: a reboot is started again at once and its BMC says on throughout, a power-off
leaves it off, and its BMC must say off too. QEMU says which on QMP: ``SHUTDOWN`` with
``"reason": "guest-reset"`` or ``"guest-shutdown"``. ``ShutdownWatch`` connects to that
socket when QEMU starts (retrying while QEMU makes it), enters command mode, and reads
events until QEMU closes the socket, keeping the last shutdown's reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger("netinstall.lab")

CONNECT_WITHIN = 30.0  # seconds for QEMU to make its socket
MAX_LINE = 65536  # bytes of one QMP line
GUEST_SHUTDOWN = "guest-shutdown"


class ShutdownWatch:
    """Reads one QEMU's QMP events on ``path`` in a thread; ``reason`` once it ended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reason: str | None = None  # the last SHUTDOWN event's reason
        self._sock: socket.socket | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="QEMU events", daemon=True)
        self._thread.start()

    def ended_by(self, timeout: float = 2.0) -> str | None:
        """The reason QEMU gave for its end (wait up to ``timeout`` seconds for the read
        to finish: QEMU writes the event before it exits); None if it gave none."""
        self._thread.join(timeout)
        return self.reason

    def close(self) -> None:
        self._closed.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def _connect(self) -> socket.socket | None:
        deadline = time.monotonic() + CONNECT_WITHIN
        while not self._closed.is_set() and time.monotonic() < deadline:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
            except OSError:
                sock.close()
                time.sleep(0.1)
                continue
            if self._closed.is_set():  # closed meanwhile: the socket is the next QEMU's
                sock.close()
                return None
            return sock
        return None

    def _read(self) -> None:
        sock = self._connect()
        if sock is None:
            log.warning("QEMU's event socket %s never answered", self.path)
            return
        self._sock = sock
        with sock, sock.makefile("rwb") as stream:
            try:
                stream.readline(MAX_LINE)  # the greeting
                stream.write(b'{"execute": "qmp_capabilities"}\n')
                stream.flush()
                while line := stream.readline(MAX_LINE):
                    message = json.loads(line)
                    if isinstance(message, dict) and message.get("event") == "SHUTDOWN":
                        data = message.get("data")
                        reason = data.get("reason") if isinstance(data, dict) else None
                        self.reason = str(reason) if reason is not None else None
            except (OSError, ValueError) as exc:
                log.debug("QEMU's events on %s: %s", self.path, exc)
