"""The lab's processes: our server and QEMU, in the namespace.

The server's dnsmasq also sends IPv6 router advertisements when the bridge has an
IPv6 address (the BIOS iPXE ROM waits ~16 s for one otherwise).

Each is a child process started through ``ip netns exec`` (which execs the command,
so the child's pid is the program itself) with its output in a log file of the
work directory; ``stop`` ends it by its pid.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from common.errors import NetinstallError
from netinstall.lab.netns import LabNetwork

log = logging.getLogger("netinstall.lab")

SERVER_READY = "serving: TFTP"  # pxe_server.server logs it once everything listens
HTTP_PORT = 8080


def netinstall_command() -> list[str]:
    """How to run this netinstall's CLI: the venv's script, else through the interpreter."""
    script = Path(sys.executable).with_name("netinstall")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from netinstall.cli import main; sys.exit(main())"]


def server_argv(
    directory: Path, net: LabNetwork, boot_transport: str = "http", dhcp: str = "full"
) -> list[str]:
    """``netinstall server run`` with DHCP on the bridge (pure): ``full``, or ``proxy``
    beside the lab's site DHCP server (``site_dhcp_argv``)."""
    leases = ["--range", f"{net.range_start},{net.range_end}"] if dhcp == "full" else []
    return [
        *netinstall_command(), "server", "run", str(directory),
        "--bind", net.server_ip,
        "--tftp-port", "69",
        "--http-port", str(HTTP_PORT),
        "--dhcp", dhcp,
        "--interface", net.bridge,
        *leases,
        "--boot-transport", boot_transport,
    ]  # fmt: skip


SITE_DHCP_READY = "DHCP, IP range"  # dnsmasq logs it once it listens


def site_dhcp_argv(net: LabNetwork, workdir: Path) -> list[str]:
    """A site's own DHCP server for the proxy-mode scenarios (pure): a plain dnsmasq that
    leases the lab's range and says nothing of booting, so that every boot answer comes
    from our server's proxy-DHCP."""
    return [
        "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--log-dhcp",
        f"--interface={net.bridge}", "--bind-interfaces",
        f"--dhcp-range={net.range_start},{net.range_end},1h",
        f"--dhcp-leasefile={workdir / 'site-dhcp.leases'}",
        f"--pid-file={workdir / 'site-dhcp.pid'}",
    ]  # fmt: skip


class Child:
    """One child process with its output in ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        append: bool = False,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.before = before  # run in the child before it executes argv (kept for a restart)
        log.info("starting %s: %s", name, " ".join(self.argv))
        with log_path.open("ab" if append else "wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=before,  # noqa: PLW1509 - one prctl, no locks taken
            )

    def exited(self) -> int | None:
        return self.proc.poll()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, text: str, timeout: float) -> None:
        """Return once ``text`` is in the output; NetinstallError if it exits or times out."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            code = self.exited()
            if code is not None or time.monotonic() > deadline:
                tail = "\n".join(self.output().splitlines()[-20:])
                why = f"exited with {code}" if code is not None else f"not ready in {timeout:g} s"
                raise NetinstallError(f"{self.name} {why}:\n{tail}")
            time.sleep(0.1)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %g s: killing it", self.name, grace)
                self.proc.kill()
                self.proc.wait()


def start_server(argv: Sequence[str], workdir: Path) -> Child:
    """Start ``netinstall server run`` (``argv``) and wait until it serves."""
    child = Child("server", argv, workdir / "server.log")
    try:
        child.wait_for(SERVER_READY, timeout=60)
    except BaseException:
        child.stop()
        raise
    return child


def monitor_command(monitor: Path, command: str, timeout: float = 10.0) -> str:
    """One command on QEMU's human monitor (``device_del path0``); what it printed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(monitor))
        sock.sendall(command.encode() + b"\n")
        out = b""
        deadline = time.monotonic() + timeout
        while out.count(b"(qemu)") < 2 and time.monotonic() < deadline:  # greeting, then done
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
    text = out.decode("utf-8", "replace")
    log.info("monitor: %s -> %s", command, text.strip().splitlines()[-2:])
    return text


def quit_qemu(qemu: Child, monitor: Path, grace: float = 5.0) -> None:
    """``quit`` on the monitor, then stop the process if it is still there."""
    if qemu.exited() is None and monitor.exists():
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
        ):
            sock.settimeout(2)
            sock.connect(str(monitor))
            sock.sendall(b"quit\n")
        with contextlib.suppress(subprocess.TimeoutExpired):
            qemu.proc.wait(timeout=grace)
    qemu.stop(grace=grace)
