"""A root shell on the lab machine's serial console, for scenarios that change the host.

QEMU's serial port is a unix socket (``qemu.Machine.console``) that also logs
everything to ``serial.log``; Xen hands serial input to dom0, whose
``serial-getty@hvc0`` offers a login. ``SerialShell`` logs in as root and runs
one command at a time, reading its output back from the log between markers of
its own, with the exit status. The lab's root password is a throw-away one
(``scenario.ROOT_PASSWORD``); nothing else is typed.
"""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from common.errors import NetinstallError
from netinstall.lab.console import clean

PROMPT = re.compile(r"root@[\w-]+:[^\n]*# ?$")
TYPE_CHUNK, TYPE_PAUSE = 8, 0.02  # bytes typed at once, seconds between (see _type)
CONTINUATION = re.compile(r"(^|\n)> ?$")  # the shell's PS2: a typed line lost a character
# Seconds to wait for the getty's or the shell's prompt before pressing Enter again.
PROMPT_WAIT = 10.0
STUCK = 5.0  # seconds at the PS2 prompt before a command line is given up as damaged
RECONNECT_WAIT = 30.0  # seconds for a power-cycled machine's new console socket
PASSWORD_WAIT = 30.0  # seconds for the password prompt after the user name (see login)
LOGIN_TRIES = 3


@dataclass
class Result:
    status: int
    output: str


class SerialShell:
    """Log in on the serial console and run commands; ``close`` when done."""

    def __init__(self, socket_path: Path, log_path: Path) -> None:
        self.socket_path = socket_path
        self.log_path = log_path
        self._connect()

    def _connect(self, timeout: float = 0) -> None:
        """Connect to the console socket, trying for ``timeout`` seconds (a QEMU that has
        just been started may not listen yet)."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.socket_path))
                break
            except OSError:
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        self.sock = sock
        # What QEMU sends us must be read at once, all the time: a full socket would
        # stall the serial port, and the machine with it. The log file has it all.
        self._reader = threading.Thread(target=self._discard, name="lab-console", daemon=True)
        self._reader.start()

    def _reconnect(self) -> None:
        """The machine was powered off and on (a reboot is a power cycle in the lab): its
        new QEMU has a new console socket at the same path."""
        self.close()
        self._connect(timeout=RECONNECT_WAIT)

    def _discard(self) -> None:
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            return

    def close(self) -> None:
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(timeout=5)

    def _type(self, text: str) -> None:
        """Type ``text`` a few characters at a time: the emulated UART's receive FIFO holds
        16 bytes, and a guest slowed by software emulation under load does not always
        empty it in time, so a whole line sent at once could lose a character."""
        data = text.encode()
        for start in range(0, len(data), TYPE_CHUNK):
            chunk = data[start : start + TYPE_CHUNK]
            try:
                self.sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                self._reconnect()
                self.sock.sendall(chunk)
            time.sleep(TYPE_PAUSE)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _since(self, offset: int) -> str:
        with self.log_path.open("rb") as stream:
            stream.seek(offset)
            return stream.read().decode("utf-8", "replace").replace("\r", "")

    def _wait(
        self,
        offset: int,
        pattern: re.Pattern[str],
        timeout: float,
        stuck: Callable[[str], bool] = lambda _text: False,
    ) -> str:
        """The log since ``offset`` once it shows ``pattern``; NetinstallError after
        ``timeout`` seconds, or after 5 s of ``stuck(text)`` holding."""
        deadline = time.monotonic() + timeout
        stuck_since = None
        while time.monotonic() < deadline:
            text = self._since(offset)
            if pattern.search(text):
                return text
            if not stuck(text):
                stuck_since = None
            elif stuck_since is None:
                stuck_since = time.monotonic()
            elif time.monotonic() - stuck_since > STUCK:
                break
            time.sleep(0.5)
        tail = " | ".join(clean(line) for line in self._since(offset).splitlines()[-5:])
        raise NetinstallError(f"the console did not show {pattern.pattern!r}: {tail}")

    def login(self, password: str, timeout: float = 300) -> None:
        """Wake the getty, log in as root and wait for the prompt. A user name typed while
        the getty starts again (systemd restarts ``serial-getty@hvc0`` as dom0 finishes
        its boot) is lost: with no password prompt within ``PASSWORD_WAIT`` the getty is
        woken and the name typed again, ``LOGIN_TRIES`` times at most."""
        for tries in range(1, LOGIN_TRIES + 1):
            offset = self._log_size()
            self._type("\r")
            self._press_enter_until(offset, re.compile(r"login: *$|# *$", re.MULTILINE), timeout)
            offset = self._log_size()
            self._type("root\r")
            try:
                self._wait(offset, re.compile(r"Password: *$", re.MULTILINE), PASSWORD_WAIT)
                break
            except NetinstallError:
                if tries == LOGIN_TRIES:
                    raise
        offset = self._log_size()
        self._type(password + "\r")
        # A kernel message printed just after the prompt ("ppdev: user-space parallel
        # port driver") leaves it mid-log: an empty line brings a fresh one.
        self._press_enter_until(offset, re.compile(r"# *$", re.MULTILINE), 120)
        self.run("stty -echo; export PS1='# ' TERM=dumb", timeout=60)

    def _press_enter_until(self, offset: int, pattern: re.Pattern[str], timeout: float) -> None:
        """Wait for ``pattern`` (a getty's or a shell's prompt), pressing Enter again after
        each PROMPT_WAIT seconds without it; NetinstallError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._wait(offset, pattern, PROMPT_WAIT)
            except NetinstallError:
                if time.monotonic() > deadline:
                    raise
            else:
                return
            offset = self._log_size()
            self._type("\r")

    def run(self, command: str, timeout: float = 300) -> Result:
        """Run ``command`` (one line of shell); its output and exit status. A line that
        lost a quote on the way leaves the shell asking for more (``> ``) and ran
        nothing: it is interrupted and typed once more."""
        offset = self._log_size()
        try:
            return self._run(command, timeout)
        except NetinstallError:
            seen = self._since(offset)
            if "-begin>>" in seen or not CONTINUATION.search(seen):
                raise
        self._type("\x03")
        time.sleep(1)
        return self._run(command, timeout)

    def _run(self, command: str, timeout: float) -> Result:
        tag = secrets.token_hex(4)
        begin, end = f"<<{tag}-begin>>", f"<<{tag}-end:"
        offset = self._log_size()
        # The end tag twice: under load the emulated UART now and then drops a character
        # of what the machine prints, and one intact copy is enough to go on.
        self._type(
            f"echo '<<{tag}-'begin'>>'; {command}; s=$?; "
            f"echo '<<{tag}-end:'$s'>>'; echo '<<{tag}-end:'$s'>>'\r"
        )
        text = self._wait(
            offset,
            re.compile(re.escape(end) + r"(\d+)>>"),
            timeout,
            stuck=lambda seen: begin not in seen and bool(CONTINUATION.search(seen)),
        )
        after = text.split(begin, 1)[-1]
        output, _, rest = after.partition(end)
        status = int(rest.split(">>", 1)[0])
        kept = [line for line in output.strip("\n").split("\n") if f"<<{tag}" not in line]
        return Result(status, "\n".join(kept))  # without a damaged copy of the end tag

    def check(self, command: str, timeout: float = 300) -> str:
        """``run`` that must succeed; its output."""
        result = self.run(command, timeout)
        if result.status != 0:
            raise NetinstallError(
                f"{command!r} on the lab machine exited {result.status}: {result.output[-300:]}"
            )
        return result.output
