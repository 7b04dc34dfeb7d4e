"""The lab's serial shell: commands and their status read back between its own markers,
even when the emulated UART drops a character of one of them."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from netinstall.lab import shell as shell_module
from netinstall.lab.shell import SerialShell


def fake_port(socket_path: Path, talk: Callable[[socket.socket], None]) -> threading.Thread:
    """A stand-in serial port on a unix socket: one connection, handed to ``talk``, which
    reads what the shell types and writes the machine's answers to the console log."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(socket_path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        try:
            talk(conn)
        finally:
            conn.close()
            server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def login_machine(
    socket_path: Path, log: Path, lines: list[bytes], answer: Callable[[bytes], str | None]
) -> threading.Thread:
    """A stand-in serial port for a login: each line typed goes to ``lines`` and gets
    ``answer(line)`` in the log; a command line (``None`` from ``answer``) gets its markers
    with status 0 and ends the talk."""

    def talk(conn: socket.socket) -> None:
        pending = b""
        while not (lines and b"<<" in lines[-1]):  # until the first command line
            received = conn.recv(4096)
            if not received:
                break
            pending += received
            while b"\r" in pending:
                line, pending = pending.split(b"\r", 1)
                lines.append(line)
                text = answer(line)
                if text is None:
                    name = re.search(rb"<<(\w+)-", line)[1].decode()  # type: ignore[index]
                    text = f"<<{name}-begin>>\r\n<<{name}-end:0>>\r\n# "
                with log.open("a") as out:
                    out.write(text)

    return fake_port(socket_path, talk)


def machine(socket_path: Path, log: Path, drop: bool) -> threading.Thread:
    """A stand-in serial port: it reads one typed command line and "prints" its markers
    to the log as the machine would, one end marker with a character lost if ``drop``."""

    def talk(conn: socket.socket) -> None:
        typed = b""
        while not typed.endswith(b"\r"):
            typed += conn.recv(4096)
        tag = re.search(rb"<<(\w+)-", typed)
        assert tag is not None
        name = tag[1].decode()
        first = f"<<{name}end:3>>" if drop else f"<<{name}-end:3>>"
        log.write_text(f"<<{name}-begin>>\r\nhello\r\n{first}\r\n<<{name}-end:3>>\r\n# ")

    return fake_port(socket_path, talk)


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


def test_a_line_that_lost_a_quote_is_typed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell_module, "STUCK", 0.5)
    path, log = tmp_path / "serial.sock", tmp_path / "serial.log"
    log.write_text("# ")
    lines: list[bytes] = []

    def talk(conn: socket.socket) -> None:
        pending = b""
        while len(lines) < 3:
            pending += conn.recv(4096)
            while b"\r" in pending or b"\x03" in pending:
                cut = min(i for i in (pending.find(b"\r"), pending.find(b"\x03")) if i >= 0)
                lines.append(pending[: cut + 1])
                pending = pending[cut + 1 :]
                if len(lines) == 1:  # a quote lost: the shell waits for the rest
                    with log.open("a") as out:
                        out.write("\r\n> ")
                elif lines[-1].endswith(b"\r"):  # typed again, whole this time
                    name = re.search(rb"<<(\w+)-", lines[-1])[1].decode()  # type: ignore[index]
                    with log.open("a") as out:
                        out.write(f"\r\n<<{name}-begin>>\r\nok\r\n<<{name}-end:0>>\r\n# ")

    thread = fake_port(path, talk)
    shell = SerialShell(path, log)
    try:
        result = shell.run("true", timeout=30)
    finally:
        shell.close()
    thread.join(timeout=10)
    assert (result.status, result.output) == (0, "ok")
    assert lines[1] == b"\x03"  # interrupted before it was typed again


def test_a_kernel_message_after_the_prompt_gets_a_fresh_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The login's prompt followed by a kernel line is no prompt at the end of the log:
    the shell presses Enter and goes on at the fresh prompt."""
    monkeypatch.setattr(shell_module, "PROMPT_WAIT", 0.5)
    path, log = tmp_path / "serial.sock", tmp_path / "serial.log"
    log.write_text("")
    lines: list[bytes] = []

    def answer(line: bytes) -> str | None:
        if line == b"" and len(lines) == 1:  # the getty woken
            return "\r\nlab01 login: "
        if line == b"root":
            return "root\r\nPassword: "
        if line == b"secret":
            return "\r\nroot@lab01:~# [   75.6] ppdev: user-space parallel port\r\n"
        if line == b"":  # Enter at the shell: a fresh prompt
            return "\r\nroot@lab01:~# "
        return None

    thread = login_machine(path, log, lines, answer)
    shell = SerialShell(path, log)
    try:
        shell.login("secret", timeout=10)
    finally:
        shell.close()
    thread.join(timeout=10)
    assert lines[:3] == [b"", b"root", b"secret"]
    assert b"" in lines[3:-1]  # Enter pressed once the prompt was lost under the kernel line


def test_typing_goes_on_through_a_power_cycle(tmp_path: Path) -> None:
    """The lab powers a rebooting machine off and on: its new QEMU listens on a new console
    socket at the same path, and the shell connects to it for what it types next."""
    path, log = tmp_path / "serial.sock", tmp_path / "serial.log"
    log.write_text("")
    first_seen: list[bytes] = []

    def first(conn: socket.socket) -> None:
        first_seen.append(conn.recv(64))  # then the machine goes: its socket closes

    old = fake_port(path, first)
    shell = SerialShell(path, log)
    try:
        shell._type("a\r")
        old.join(timeout=10)
        path.unlink()  # QEMU's next start binds the path again
        served = machine(path, log, drop=False)  # the new QEMU
        result = shell.run("echo hello; false", timeout=10)
    finally:
        shell.close()
    served.join(timeout=10)
    assert first_seen == [b"a\r"]
    assert (result.status, result.output) == (3, "hello")


def test_a_user_name_lost_to_a_restarting_getty_is_typed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd restarts the serial getty late in dom0's boot: the first ``root`` typed
    there gets no password prompt. The shell wakes the getty and types the name again."""
    monkeypatch.setattr(shell_module, "PROMPT_WAIT", 0.5)
    monkeypatch.setattr(shell_module, "PASSWORD_WAIT", 1.0)
    path, log = tmp_path / "serial.sock", tmp_path / "serial.log"
    log.write_text("")
    lines: list[bytes] = []

    def answer(line: bytes) -> str | None:
        if line == b"":  # the getty woken (again)
            return "\r\nlab01 login: "
        if line == b"root" and lines.count(b"root") == 1:
            return "\r\n[   80.1] the getty starts again\r\n"  # the name is lost
        if line == b"root":
            return "root\r\nPassword: "
        if line == b"secret":
            return "\r\nroot@lab01:~# "
        return None

    thread = login_machine(path, log, lines, answer)
    shell = SerialShell(path, log)
    try:
        shell.login("secret", timeout=10)
    finally:
        shell.close()
    thread.join(timeout=10)
    assert lines.count(b"root") == 2
    assert lines.index(b"secret") > lines.index(b"root") + 1  # the second name got it
