"""Two network namespaces joined by one veth pair, for tests that need a real segment
(dnsmasq answering DHCP, a client fetching over TFTP and HTTP from its own address).

``veth_pair`` creates them, yields their names and deletes them afterwards, even when the
test fails; names carry a random suffix so that parallel runs never meet.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SERVER_LINK = "srv0"
CLIENT_LINK = "cli0"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@dataclass(frozen=True)
class Pair:
    server_ns: str  # holds SERVER_LINK
    client_ns: str  # holds CLIENT_LINK


@contextmanager
def veth_pair(
    prefix: str,
    server_addresses: tuple[str, ...],
    client_mac: str | None = None,
    client_address: str | None = None,
) -> Iterator[Pair]:
    """Namespaces ``ni-<prefix>srv-*`` and ``ni-<prefix>cli-*``, both links up, the server's
    addresses on its end (``nodad`` for IPv6) and the client's MAC and address if given."""
    suffix = secrets.token_hex(4)
    srv, cli = f"ni-{prefix}srv-{suffix}", f"ni-{prefix}cli-{suffix}"
    created: list[str] = []
    try:
        for ns in (srv, cli):
            ip("netns", "add", ns)
            created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", srv, "link", "add", SERVER_LINK, "type", "veth", "peer", "name", CLIENT_LINK)
        ip("-n", srv, "link", "set", CLIENT_LINK, "netns", cli)
        for address in server_addresses:
            extra = ("nodad",) if ":" in address else ()
            ip("-n", srv, "addr", "add", address, "dev", SERVER_LINK, *extra)
        ip("-n", srv, "link", "set", SERVER_LINK, "up")
        if client_mac is not None:
            ip("-n", cli, "link", "set", CLIENT_LINK, "address", client_mac)
        if client_address is not None:
            ip("-n", cli, "addr", "add", client_address, "dev", CLIENT_LINK)
        ip("-n", cli, "link", "set", CLIENT_LINK, "up")
        yield Pair(srv, cli)
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
        assert not {srv, cli} & {line.split()[0] for line in left.stdout.splitlines() if line}
