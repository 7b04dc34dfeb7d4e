"""Whole segments for GRUB's TCP: the boot files' connections whose SYN named no MSS.

GRUB 2.06's TCP (grub-core/net/tcp.c) sends a bare SYN: no options at all, so no MSS,
and a fixed 8 KiB window. RFC 1122 then makes Linux assume an MSS of 536 bytes: GRUB
receives install.img in 536-byte segments (15 of them and a 152-byte one fill its
window) and acknowledges each one. In the lab its cost is per packet (about 85 us a
segment under QEMU's TCG, the same at 1460 bytes), so 72 MB took 135,000 segments and
21 s (README "Boot transport" has the capture).

``TCP_MAXSEG`` can only lower a connection's MSS. What raises it is the kernel's repair
mode: ``TCP_REPAIR_OPTIONS`` sets the MSS the peer would have named, then any
``IP_OPTIONS`` write makes the kernel recompute the segment size (``tcp_sync_mss``).
Repair mode needs CAP_NET_ADMIN (``server run`` as root has it); without it the
connection keeps 536-byte segments and the server says so once.

Scope: only a connection whose saved SYN (``TCP_SAVE_SYN`` on the listener) carried no
MSS option. iPXE, OVMF's HTTP boot, Linux and curl all name one, and are never touched.
The MSS given is the route's (``IP_MTU`` less 40 bytes) but at most ``GRUB_MSS``, a
standard Ethernet frame: a peer that named nothing is assumed to take what fits there.
"""

from __future__ import annotations

import enum
import errno
import logging
import socket
import struct
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("netinstall.http")

GRUB_MSS = 1460  # bytes: the most given to a peer whose SYN named no MSS (1500-byte frame)
DEFAULT_MSS = 536  # RFC 1122: what Linux assumes without the option

# <linux/tcp.h>, <linux/in.h>: not all are in Python's socket module.
TCP_REPAIR = 19
TCP_REPAIR_OPTIONS = 22
TCP_SAVE_SYN = 27
TCP_SAVED_SYN = 28
TCP_REPAIR_ON = 1
TCP_REPAIR_OFF_NO_WP = -1  # leave repair mode without sending a window probe
TCPOPT_MSS = 2
IP_MTU = 14
IPV4_TCP_HEADERS = 40  # an IPv4 header and a TCP header without options
SAVED_SYN_MAX = 512  # bytes read back: an IPv4 header (60 at most) + TCP's (60 at most)


class SockOpts(Protocol):
    """What is used of a socket: asyncio's TransportSocket and socket.socket both fit."""

    @property
    def family(self) -> int: ...

    def getsockopt(self, level: int, optname: int, buflen: int = ..., /) -> bytes: ...

    def setsockopt(self, level: int, optname: int, value: int | bytes, /) -> None: ...


class Outcome(enum.Enum):
    RAISED = "raised"  # the connection now sends segments of the MSS returned
    NAMED = "named"  # the SYN named an MSS (or was already read): nothing to do
    NOT_IPV4 = "not-ipv4"
    NOT_PERMITTED = "not-permitted"  # no CAP_NET_ADMIN: never tried again by this policy
    FAILED = "failed"  # this connection refused (closed already, data sent): left as it is


def save_syns(listener: socket.socket) -> bool:
    """Ask the kernel to keep each accepted connection's SYN (read once by ``whole_segments``)."""
    if listener.family != socket.AF_INET:
        return False
    try:
        listener.setsockopt(socket.IPPROTO_TCP, TCP_SAVE_SYN, 1)
    except OSError as exc:
        log.info("no saved SYNs on the HTTP listener (%s): GRUB gets 536-byte segments", exc)
        return False
    return True


def syn_names_mss(syn: bytes) -> bool:
    """Whether a saved SYN (IPv4 header + TCP header with its options) carries an MSS option.

    Anything that is not a well-formed IPv4 TCP SYN counts as naming one: the connection
    is then left alone.
    """
    if len(syn) < 20 or syn[0] >> 4 != 4:
        return True
    ihl = (syn[0] & 0x0F) * 4
    if ihl < 20 or len(syn) < ihl + 20 or syn[9] != socket.IPPROTO_TCP:
        return True
    tcp = syn[ihl:]
    doff = (tcp[12] >> 4) * 4
    if doff < 20 or len(tcp) < doff or not tcp[13] & 0x02:
        return True
    options, at = tcp[20:doff], 0
    while at < len(options):
        kind = options[at]
        if kind == 0:  # end of options
            return False
        if kind == 1:  # no-op
            at += 1
            continue
        if at + 1 >= len(options) or options[at + 1] < 2:
            return True  # malformed: leave it alone
        if kind == TCPOPT_MSS:
            return True
        at += options[at + 1]
    return False


def segment_size(path_mtu: int) -> int:
    """The MSS given to a peer that named none: the route's, at most ``GRUB_MSS``."""
    return max(DEFAULT_MSS, min(GRUB_MSS, path_mtu - IPV4_TCP_HEADERS))


@dataclass
class WholeSegments:
    """The policy of one server: raise the MSS of connections that named none.

    ``permitted`` goes False at the first EPERM from repair mode (no CAP_NET_ADMIN),
    said once in the log; later connections are not tried.
    """

    permitted: bool = True
    raised: int = field(default=0)  # connections raised so far (the log and tests read it)

    def apply(self, sock: SockOpts) -> tuple[Outcome, int]:
        """Raise ``sock``'s MSS if its SYN named none; returns what happened and the MSS."""
        if sock.family != socket.AF_INET:
            return Outcome.NOT_IPV4, 0
        try:
            syn = sock.getsockopt(socket.IPPROTO_TCP, TCP_SAVED_SYN, SAVED_SYN_MAX)
        except OSError:
            return Outcome.NAMED, 0  # no saved SYN (not asked for on this listener)
        if not syn or syn_names_mss(syn):
            return Outcome.NAMED, 0  # read already (an earlier request), or it named one
        if not self.permitted:
            return Outcome.NOT_PERMITTED, DEFAULT_MSS
        try:
            mtu = struct.unpack("i", sock.getsockopt(socket.IPPROTO_IP, IP_MTU, 4))[0]
        except OSError:
            return Outcome.FAILED, DEFAULT_MSS
        mss = segment_size(mtu)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)
        except OSError as exc:
            if exc.errno != errno.EPERM:
                return Outcome.FAILED, DEFAULT_MSS
            self.permitted = False
            log.warning(
                "GRUB's boot files go in %d-byte segments: raising its connections' MSS "
                'needs CAP_NET_ADMIN (run `server run` as root); README "Boot transport"',
                DEFAULT_MSS,
            )
            return Outcome.NOT_PERMITTED, DEFAULT_MSS
        try:
            sock.setsockopt(
                socket.IPPROTO_TCP, TCP_REPAIR_OPTIONS, struct.pack("II", TCPOPT_MSS, mss)
            )
        except OSError:
            return Outcome.FAILED, DEFAULT_MSS  # e.g. data sent already on this connection
        finally:
            _leave_repair(sock)
        try:
            # no IP options, as before; but the write makes the kernel recompute the MSS
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"")
            now = struct.unpack("i", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 4))[0]
        except OSError:
            return Outcome.FAILED, DEFAULT_MSS
        self.raised += 1
        return Outcome.RAISED, now


def _leave_repair(sock: SockOpts) -> None:
    """Leave repair mode (sending nothing) and give back the listener's SO_REUSEADDR,
    which leaving drops; never raises (the connection then goes on as it was)."""
    for level, name, value in (
        (socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP),
        (socket.SOL_SOCKET, socket.SO_REUSEADDR, 1),
    ):
        try:
            sock.setsockopt(level, name, value)
        except OSError as exc:
            log.warning("leaving TCP repair mode: %s", exc)
