"""The lab's SAN: a storage network beside the management one, and an iSCSI target on it.

A SAN scenario gives the lab machine a second NIC on a bridge of its own
(``br1``, 192.168.78.0/24): the storage network, a separate layer-3 network as
the seed's Cisco UCS requirements ask. ``Target`` runs Debian's userspace
``tgtd`` inside the namespace, listening on the storage bridge only, on a
private control port (parallel runs each have their own), and exports the lab
disk image (sparse, 60 GiB) as LUN 1 of one target (LUN 0 is tgtd's
controller). The machine then has no local disk at all: a diskless blade.

``setup_commands`` is pure; ``Target`` starts and stops the daemon.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import CommandError, NetinstallError
from common.process import run
from netinstall.lab import netns, services

log = logging.getLogger("netinstall.lab")

STORAGE_BRIDGE = "br1"
STORAGE_TAP = "tap1"
PORTAL = ipaddress.IPv4Interface("192.168.78.1/24")  # the target, on the storage bridge
# Its further portals (iSCSI multipath: one LUN behind several addresses of the target).
PORTALS = (PORTAL, ipaddress.IPv4Interface("192.168.78.2/24"))
HOST_NUMBER = 50  # the machine's storage address: 192.168.78.50/24 (set by its iPXE script)
PORT = 3260
LUN = 1
IQN_PREFIX = "iqn.2026-12.org.netinstall.lab:"
STORAGE_MAC_PREFIX = "52:54:00:78:00:"
READY_TIMEOUT = 20.0


@dataclass(frozen=True)
class Storage:
    """One lab SAN: the namespace's storage bridge and the target the machine boots from."""

    namespace: str
    name: str  # the target's IQN suffix (the firmware: one target per machine)
    control_port: int
    portals: int = 1  # how many of PORTALS the target listens on (2: iSCSI multipath)

    @property
    def iqn(self) -> str:
        return IQN_PREFIX + self.name

    @property
    def addresses(self) -> tuple[ipaddress.IPv4Interface, ...]:
        return PORTALS[: self.portals]

    @property
    def root_paths(self) -> list[str]:
        """The LUN as RFC 4173 names it through each portal (what the host record and iPXE
        take)."""
        return [f"iscsi:{portal.ip}::{PORT}:{LUN}:{self.iqn}" for portal in self.addresses]

    @property
    def host_address(self) -> str:
        return f"{PORTAL.network.network_address + HOST_NUMBER}/{PORTAL.network.prefixlen}"


def new_storage(namespace: str, name: str, portals: int = 1) -> Storage:
    """A storage network in ``namespace`` with a control port of its own."""
    if not 1 <= portals <= len(PORTALS):
        raise NetinstallError(f"the lab's target has 1 to {len(PORTALS)} portals, not {portals}")
    port = 1000 + secrets.randbelow(31000)  # tgtd: < 32768
    return Storage(namespace, name, control_port=port, portals=portals)


def storage_mac(suffix: str) -> str:
    return STORAGE_MAC_PREFIX + suffix


def setup_commands(storage: Storage) -> list[list[str]]:
    """The ``ip`` commands that add the storage bridge and the machine's storage tap (pure)."""
    ns = storage.namespace
    return [
        ["ip", "-n", ns, "link", "add", STORAGE_BRIDGE, "type", "bridge"],
        *(
            ["ip", "-n", ns, "addr", "add", str(p), "dev", STORAGE_BRIDGE]
            for p in storage.addresses
        ),
        ["ip", "-n", ns, "link", "set", STORAGE_BRIDGE, "up"],
        ["ip", "-n", ns, "tuntap", "add", "dev", STORAGE_TAP, "mode", "tap"],
        ["ip", "-n", ns, "link", "set", STORAGE_TAP, "master", STORAGE_BRIDGE],
        ["ip", "-n", ns, "link", "set", STORAGE_TAP, "up"],
    ]


def tgtadm(storage: Storage, *args: str) -> list[str]:
    return ["tgtadm", "-C", str(storage.control_port), "--lld", "iscsi", *args]


LUN_ARGS = ("--op", "new", "--mode", "logicalunit", "--tid", "1")


def target_commands(storage: Storage, backing: Path) -> list[list[str]]:
    """The further portals, the target, its LUN over ``backing`` and an ACL open to every
    initiator."""
    portals = [
        tgtadm(storage, "--op", "new", "--mode", "portal", "--param", f"portal={p.ip}:{PORT}")
        for p in storage.addresses[1:]
    ]
    return [
        *portals,
        tgtadm(storage, "--op", "new", "--mode", "target", "--tid", "1", "-T", storage.iqn),
        tgtadm(storage, *LUN_ARGS, "--lun", str(LUN), "-b", str(backing)),
        tgtadm(storage, "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"),
    ]


# The one initiator the target admits once it turns the lab machine away (refuse_login).
OTHER_INITIATOR = "iqn.2026-12.org.netinstall.lab:someone-else"


class Target:
    """``tgtd`` in the namespace exporting ``backing`` (started in ``__init__``)."""

    def __init__(self, storage: Storage, backing: Path, workdir: Path) -> None:
        self.storage = storage
        for argv in setup_commands(storage):
            run(argv)
        daemon = ["tgtd", "-f", "-C", str(storage.control_port),
                  "--iscsi", f"portal={PORTAL.ip}:{PORT}"]  # fmt: skip
        self.child = services.Child(
            "tgtd", netns.netns_exec(storage.namespace, daemon), workdir / "tgtd.log"
        )
        try:
            self._wait_ready()
            for argv in target_commands(storage, backing):
                run(argv)
        except BaseException:
            self.stop()
            raise
        where = ", ".join(f"{p.ip}:{PORT}" for p in storage.addresses)
        log.info("iSCSI target %s LUN %d: %s on %s", storage.iqn, LUN, backing, where)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                run(tgtadm(self.storage, "--op", "show", "--mode", "sys"), timeout=10)
            except CommandError:
                if self.child.exited() is not None or time.monotonic() > deadline:
                    tail = self.child.output().strip()[-500:]
                    raise NetinstallError(f"tgtd did not come up: {tail}") from None
                time.sleep(0.2)
            else:
                return

    def refuse_login(self) -> None:
        """From now on admit only another initiator: the machine's next login is refused
        (its firmware's session, made before, is not the installer's)."""
        run(tgtadm(self.storage, "--op", "unbind", "--mode", "target", "--tid", "1", "-I", "ALL"))
        run(tgtadm(self.storage, "--op", "bind", "--mode", "target", "--tid", "1",
                   "-I", OTHER_INITIATOR))  # fmt: skip
        log.info("iSCSI target %s now admits only %s", self.storage.iqn, OTHER_INITIATOR)

    def drop_portal(self, index: int) -> str:
        """Take a portal's address off the storage bridge: its sessions stop hearing from
        the target, as when a SAN switch or cable fails. Returns the address."""
        portal = self.storage.addresses[index]
        run(["ip", "-n", self.storage.namespace, "addr", "del", str(portal), "dev",
             STORAGE_BRIDGE])  # fmt: skip
        log.info("iSCSI portal %s is gone from the storage network", portal.ip)
        return str(portal.ip)

    def stop(self) -> None:
        """Remove the target (sessions and all), then ask tgtd to end: it ignores SIGTERM
        while it holds a target. Killed if it is still there after that."""
        if self.child.exited() is None:
            for argv in (
                tgtadm(self.storage, "--op", "delete", "--mode", "target", "--tid", "1",
                       "--force"),
                ["tgtadm", "-C", str(self.storage.control_port), "--op", "delete",
                 "--mode", "system", "--force"],
            ):  # fmt: skip
                try:
                    run(argv, timeout=20)
                except CommandError as exc:
                    log.info("tgtd shutdown: %s", exc)
            try:
                self.child.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("tgtd is still running: killing it")
        if self.child.exited() is None:
            self.child.proc.kill()
            self.child.proc.wait()
