"""The fallback lab network: QEMU user-mode networking, for machines without namespaces.

This is NOT the real chain. QEMU's built-in DHCP and TFTP server (slirp) answer
the firmware instead of our dnsmasq and TFTP server: the firmware gets
``bootfile`` from QEMU, and reads every TFTP file from an export directory that
holds the netboot tree (symbolic links) and the host's boot configs, which the
lab fetches from our server's operator route ``/api/v1/boot-configs/`` (with the
server directory's API token) whenever the host's state changes (``Export.refresh``).
Our HTTP server runs on this machine's loopback; the guest reaches it as ``10.0.2.2``
(slirp forwards that address to the host). So this checks the installer, the
install and the first boot, not DHCP nor our TFTP server; and the host is marked
signalled when the lab exports its install config, not when the machine reads it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import requests

from common.errors import NetinstallError
from netinstall.lab import services
from pxe_server.model import mac_dashes
from pxe_server.secrets import API_TOKEN_FILE

log = logging.getLogger("netinstall.lab")

NETWORK = ipaddress.IPv4Interface("10.0.2.2/24")  # slirp's default network and host alias
LOUD = (
    "WARNING: --network user is a fallback for machines without network namespaces. "
    "QEMU's own DHCP and TFTP stand in for our dnsmasq and TFTP server, so this run "
    "does not test the real boot chain; use --network netns wherever you can."
)


def free_port() -> int:
    """A TCP port on the loopback nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class UserNetwork:
    export: Path  # QEMU's TFTP root
    http_port: int
    boot_file: str  # pxelinux.0 or grubx64.efi

    @property
    def server(self) -> ipaddress.IPv4Interface:
        """The server's address as the guest sees it (slirp's host alias)."""
        return NETWORK

    def netdev(self) -> str:
        """The ``-netdev`` value: slirp with our export as its TFTP root (pure)."""
        return (
            f"user,id=n0,net={NETWORK.network},host={NETWORK.ip},"
            f"tftp={self.export},bootfile={self.boot_file}"
        )

    def server_argv(self, directory: Path) -> list[str]:
        """``netinstall server run`` on the loopback, no DHCP (pure)."""
        return [
            *services.netinstall_command(), "server", "run", str(directory),
            "--bind", "127.0.0.1",
            "--tftp-port", "0",  # ours is not used: QEMU serves TFTP from the export
            "--http-port", str(self.http_port),
            "--dhcp", "off",
        ]  # fmt: skip


def new_user_network(workdir: Path, firmware: str) -> UserNetwork:
    return UserNetwork(
        export=workdir / "tftp",
        http_port=free_port(),
        boot_file="pxelinux.0" if firmware == "bios" else "grubx64.efi",
    )


def config_paths(mac: str) -> list[str]:
    """The boot configs pxelinux and GRUB ask TFTP for: the host's, then the catch-alls."""
    dashes = mac_dashes(mac)
    return [
        f"pxelinux.cfg/01-{dashes}",
        f"grub/grub.cfg-01-{dashes}",
        "pxelinux.cfg/default",
        "grub/grub.cfg",
    ]


class Export:
    """QEMU's TFTP root: the netboot tree linked in, the host's configs refreshed."""

    def __init__(self, net: UserNetwork, netboot: Path, mac: str, server_dir: Path) -> None:
        self.net = net
        self.mac = mac
        self.server_dir = server_dir
        self.last_state: str | None = None
        net.export.mkdir(parents=True, exist_ok=True)
        for item in sorted(netboot.resolve().iterdir()):
            link = net.export / item.name
            if not link.exists():
                link.symlink_to(item)

    def refresh(self, state: str) -> None:
        """Fetch the host's configs again when its state changed since the last refresh."""
        if state == self.last_state:
            return
        base = f"http://127.0.0.1:{self.net.http_port}/api/v1/boot-configs/"
        token = (self.server_dir / API_TOKEN_FILE).read_text("utf-8").strip()
        auth = {"Authorization": f"Bearer {token}"}
        for path in config_paths(self.mac):
            try:
                reply = requests.get(base + path, headers=auth, timeout=10)
            except requests.RequestException as exc:
                raise NetinstallError(f"cannot read {path} from the lab's server: {exc}") from exc
            if reply.status_code != 200:
                raise NetinstallError(
                    f"the lab's server answered {reply.status_code} for {path}: {reply.text[:200]}"
                )
            target = self.net.export / path
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".new")
            partial.write_text(reply.text)
            os.replace(partial, target)
        log.info("tftp export: boot configs of %s refreshed for state %s", self.mac, state)
        self.last_state = state
