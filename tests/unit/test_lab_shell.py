"""The lab's serial shell: commands and their status read back between its own markers,
even when the emulated UART drops a character of one of them."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

from netinstall.lab.shell import SerialShell


def machine(socket_path: Path, log: Path, drop: bool) -> threading.Thread:
    """A stand-in serial port: it reads one typed command line and "prints" its markers
    to the log as the machine would, one end marker with a character lost if ``drop``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(socket_path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        typed = b""
        while not typed.endswith(b"\r"):
            typed += conn.recv(4096)
        tag = re.search(rb"<<(\w+)-", typed)
        assert tag is not None
        name = tag[1].decode()
        first = f"<<{name}end:3>>" if drop else f"<<{name}-end:3>>"
        log.write_text(f"<<{name}-begin>>\r\nhello\r\n{first}\r\n<<{name}-end:3>>\r\n# ")
        conn.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_command_is_read_back_with_its_status(tmp_path: Path) -> None:
    for drop in (False, True):
        path, log = tmp_path / f"serial-{drop}.sock", tmp_path / f"serial-{drop}.log"
        log.write_text("")
        served = machine(path, log, drop)
        shell = SerialShell(path, log)
        try:
            result = shell.run("echo hello; false", timeout=10)
        finally:
            shell.close()
        served.join(timeout=10)
        assert (result.status, result.output) == (3, "hello"), drop
