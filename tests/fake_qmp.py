"""A QMP server on a unix socket standing for QEMU's, for the lab's IPMI BMC's tests: a
thread, no process."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from pathlib import Path


class FakeQmp:
    """A QMP server on a unix socket, as QEMU's: the greeting, ``qmp_capabilities``,
    ``query-status`` (running) and any other command recorded and answered; with
    ``events``, an event line comes before each reply (as QEMU's do at times); with
    ``shutdown``, each client gets a SHUTDOWN event of that reason once in command mode,
    and its connection closes (as QEMU ends)."""

    def __init__(self, path: Path, *, events: bool = False, shutdown: str | None = None) -> None:
        self.commands: list[str] = []
        self.events = events
        self.shutdown = shutdown
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as stream:
                stream.write(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
                stream.flush()
                for line in stream:
                    command = json.loads(line)["execute"]
                    self.commands.append(command)
                    answer: object = {"status": "running"} if command == "query-status" else {}
                    if self.events:
                        stream.write(b'{"event": "RESUME", "timestamp": {}}\r\n')
                    stream.write(json.dumps({"return": answer}).encode() + b"\r\n")
                    if self.shutdown is not None:
                        event = {
                            "event": "SHUTDOWN",
                            "data": {"guest": True, "reason": self.shutdown},
                        }
                        stream.write(json.dumps(event).encode() + b"\r\n")
                        stream.flush()
                        break
                    stream.flush()

    def close(self) -> None:
        """Stop listening (QEMU gone): a blocked accept ends with the shutdown."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)
