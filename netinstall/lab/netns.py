"""The lab's private network: a namespace with a bridge, a tap for the VM, addresses.

``LabNetwork`` names everything; ``setup_commands`` lists the ``ip`` commands that
build it (pure); ``create`` runs them and ``destroy`` deletes the namespace (its
bridge and tap go with it). Processes started inside it with ``netns_exec`` must be
stopped before ``destroy``: a namespace whose processes live on stays alive under
the hood, so ``destroy`` first ends every process still in it (``ip netns pids``),
all of which the lab started itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import InputError, NetinstallError
from common.process import run

log = logging.getLogger("netinstall.lab")

PREFIX = "ni-lab-"


@dataclass(frozen=True)
class LabNetwork:
    """One lab network: ``namespace`` holds ``bridge`` (with the server's addresses)
    and ``tap`` (the VM's NIC, enslaved to the bridge)."""

    namespace: str
    bridge: str = "br0"
    tap: str = "tap0"
    address: str = "192.168.77.1/24"
    address6: str | None = "fd77::1/64"  # for router advertisements (iPXE waits ~16 s without)
    range_start: str = "192.168.77.100"
    range_end: str = "192.168.77.200"

    def __post_init__(self) -> None:
        problems = []
        if not self.namespace.startswith(PREFIX) or len(self.namespace) > 40:
            problems.append(f"namespace {self.namespace!r} is not like {PREFIX}<hex>")
        network = ipaddress.IPv4Interface(self.address).network
        for what in (self.range_start, self.range_end):
            if ipaddress.IPv4Address(what) not in network:
                problems.append(f"DHCP range address {what} is outside {network}")
        if problems:
            raise InputError(problems)

    @property
    def server_ip(self) -> str:
        return str(ipaddress.IPv4Interface(self.address).ip)

    @property
    def ra_prefix(self) -> str | None:
        """``fd77::`` for ``fd77::1/64``: the prefix dnsmasq advertises."""
        if self.address6 is None:
            return None
        return str(ipaddress.IPv6Interface(self.address6).network.network_address)


def new_network() -> LabNetwork:
    """A network with a fresh namespace name, ``ni-lab-<8 hex digits>``."""
    return LabNetwork(namespace=PREFIX + secrets.token_hex(4))


def setup_commands(net: LabNetwork) -> list[list[str]]:
    """The ``ip`` commands that build ``net`` (pure), in order."""
    ns = net.namespace
    commands = [
        ["ip", "netns", "add", ns],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "-n", ns, "link", "add", net.bridge, "type", "bridge"],
        ["ip", "-n", ns, "addr", "add", net.address, "dev", net.bridge],
    ]
    if net.address6 is not None:
        # nodad: the address is usable at once (dnsmasq's RA needs it).
        commands.append(["ip", "-n", ns, "addr", "add", net.address6, "dev", net.bridge, "nodad"])
    commands += [
        ["ip", "-n", ns, "link", "set", net.bridge, "up"],
        ["ip", "-n", ns, "tuntap", "add", "dev", net.tap, "mode", "tap"],
        ["ip", "-n", ns, "link", "set", net.tap, "master", net.bridge],
        ["ip", "-n", ns, "link", "set", net.tap, "up"],
    ]
    return commands


def netns_exec(namespace: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``namespace`` (pure)."""
    return ["ip", "netns", "exec", namespace, *argv]


def namespaces() -> list[str]:
    """The names of the network namespaces that exist now."""
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def create(net: LabNetwork) -> None:
    """Build the network; on a failure, delete whatever was built and re-raise."""
    if os.geteuid() != 0:
        raise InputError("the lab needs root (network namespaces, a tap device)")
    try:
        for argv in setup_commands(net):
            run(argv)
    except BaseException:
        destroy(net.namespace)
        raise
    log.info(
        "network namespace %s: %s on %s, tap %s", net.namespace, net.address, net.bridge, net.tap
    )


def _pids(namespace: str) -> list[int]:
    proc = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    )
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def destroy(namespace: str, *, grace: float = 5.0) -> None:
    """End the processes left in ``namespace`` (TERM, then KILL), then delete it.

    Idempotent; a NetinstallError when the namespace still exists afterwards.
    """
    if namespace not in namespaces():
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _pids(namespace)
        if not pids:
            break
        log.warning("ending processes left in %s: %s", namespace, pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _pids(namespace) and time.monotonic() < deadline:
            time.sleep(0.1)
    run(["ip", "netns", "delete", namespace])
    if namespace in namespaces():
        raise NetinstallError(f"network namespace {namespace} still exists after deleting it")
