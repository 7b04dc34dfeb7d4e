"""UEFI HTTP Boot beside another DHCP server: proxy offers for vendor class HTTPClient.

In proxy-DHCP mode another server leases the addresses and dnsmasq answers PXE clients
only: its proxy mode ignores every request whose vendor class is not ``PXEClient``. UEFI
HTTP Boot (edk2's HttpBootDxe) asks with vendor class ``HTTPClient`` and, in the corporate
case, takes its address from one DHCP offer and its boot URI from a *proxy offer*: an
offer with no address (yiaddr 0), option 60 ``HTTPClient`` and the URI in option 67
(edk2's "DHCP only + proxy IP URI" choice). This module sends exactly that offer, nothing
else, so the site's DHCP server keeps every lease.

How it listens without taking anything from dnsmasq: dnsmasq holds UDP port 67 and must
keep every packet sent to it, so this responder reads copies of the frames that arrive on
the interface through a packet socket (``AF_PACKET``) whose kernel filter passes IPv4 UDP
to port 67 only, and sends its offer the same way, as a broadcast frame from port 67 to
port 68, the way a DHCP server answers a client that has no address yet.

What it answers: a DHCPDISCOVER, not relayed (giaddr 0), whose option 60 starts with
``HTTPClient``; everything else is ignored. It sends at most ``OFFER_RATE`` offers a
second (bursts of ``OFFER_BURST``), so that a flood of requests on the provisioning
network costs one bounded stream of broadcasts; refusals are logged once a burst.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("netinstall.http_boot_proxy")

HTTP_CLIENT = b"HTTPClient"
SERVER_PORT = 67
CLIENT_PORT = 68
OFFER_RATE = 20.0  # proxy offers a second at most ...
OFFER_BURST = 40  # ... in bursts of at most this many
MAX_PACKET = 1500  # bytes of a frame read; DHCP requests fit in 576
MIN_BOOTP = 300  # a BOOTP/DHCP message is padded to this many bytes (RFC 951)
MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER = 1, 2
_BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes before the magic cookie
ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26  # linux/socket.h; not in Python's socket module


@dataclass(frozen=True)
class Discover:
    """What an HTTP Boot client's DHCPDISCOVER says that its proxy offer repeats."""

    xid: int
    flags: int
    chaddr: bytes  # 16 bytes as sent
    uuid: bytes | None  # option 97 (the client's machine id), echoed when given


def options(data: bytes) -> dict[int, bytes] | None:
    """DHCP options after the magic cookie, each code's first occurrence; None if malformed
    (a length running past the end). Bounded by the message's own length."""
    found: dict[int, bytes] = {}
    at = 0
    while at < len(data):
        code = data[at]
        if code == 0:  # pad
            at += 1
            continue
        if code == 255:  # end
            return found
        if at + 1 >= len(data):
            return None
        length = data[at + 1]
        value = data[at + 2 : at + 2 + length]
        if len(value) != length:
            return None
        found.setdefault(code, value)
        at += 2 + length
    return found


def parse_discover(message: bytes) -> Discover | None:
    """The DHCP ``message`` (a UDP payload) as an HTTP Boot client's own DHCPDISCOVER;
    None for anything else: a reply, a relayed or malformed message, another message type,
    another vendor class."""
    if len(message) < _BOOTP.size + len(MAGIC) or len(message) > MAX_PACKET:
        return None
    op, htype, hlen, _hops, xid, _secs, flags, _ci, _yi, _si, giaddr, chaddr, _sn, _file = (
        _BOOTP.unpack_from(message)
    )
    if op != 1 or htype != 1 or hlen != 6 or giaddr != bytes(4):
        return None
    if message[_BOOTP.size : _BOOTP.size + 4] != MAGIC:
        return None
    found = options(message[_BOOTP.size + 4 :])
    if found is None or found.get(53) != bytes([DISCOVER]):
        return None
    if not found.get(60, b"").startswith(HTTP_CLIENT):
        return None
    uuid = found.get(97)
    return Discover(xid, flags, chaddr, uuid if uuid and len(uuid) == 17 else None)


def proxy_offer(discover: Discover, server: str, url: str) -> bytes:
    """The proxy offer for ``discover``: no address, ``server`` as siaddr and server id,
    option 60 ``HTTPClient`` and ``url`` as the boot file (option 67)."""
    try:
        address = ipaddress.IPv4Address(server).packed
    except ipaddress.AddressValueError:
        raise ValueError(f"a DHCPv4 offer names an IPv4 server, not {server!r}") from None
    boot = url.encode("ascii", errors="replace")
    if not url.isascii() or not boot or len(boot) > 255:
        raise ValueError(f"the HTTP boot URL must be 1-255 ASCII characters: {url!r}")
    head = _BOOTP.pack(
        2, 1, 6, 0, discover.xid, 0, discover.flags, bytes(4), bytes(4), address, bytes(4),
        discover.chaddr, bytes(64), bytes(128),
    )  # fmt: skip
    body = bytes([53, 1, OFFER]) + bytes([54, 4]) + address
    body += bytes([60, len(HTTP_CLIENT)]) + HTTP_CLIENT
    body += bytes([67, len(boot)]) + boot
    if discover.uuid is not None:
        body += bytes([97, len(discover.uuid)]) + discover.uuid
    message = head + MAGIC + body + b"\xff"
    return message.ljust(MIN_BOOTP, b"\0")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_datagram(source: str, payload: bytes) -> bytes:
    """An IPv4 packet from ``source``:67 to 255.255.255.255:68 carrying ``payload``."""
    src = ipaddress.IPv4Address(source).packed
    dst = b"\xff\xff\xff\xff"
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    udp = struct.pack("!HHHH", SERVER_PORT, CLIENT_PORT, length, 0) + payload
    udp_sum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0, 64, 17, 0, src, dst)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def udp_payload_to_server(packet: bytes) -> bytes | None:
    """The UDP payload of an IPv4 ``packet`` sent to port 67; None for anything else (the
    kernel filter passes only those, but it is attached after the socket opens)."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    if struct.unpack_from("!H", packet, 6)[0] & 0x1FFF:  # a fragment past the first
        return None
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl + 8:
        return None
    _sport, dport, length = struct.unpack_from("!HHH", packet, ihl)
    if dport != SERVER_PORT or length < 8:
        return None
    return packet[ihl + 8 : ihl + length]


# The kernel filter (classic BPF, offsets from the IP header: the socket is SOCK_DGRAM):
# IPv4 protocol UDP, not a later fragment, destination port 67.
_FILTER = (
    (0x30, 0, 0, 9),  # ldb [9]            protocol
    (0x15, 0, 6, 17),  # jeq #17           else drop
    (0x28, 0, 0, 6),  # ldh [6]            flags and fragment offset
    (0x45, 4, 0, 0x1FFF),  # jset #0x1fff  a later fragment: drop
    (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)   the IP header's length
    (0x48, 0, 0, 2),  # ldh [x+2]          the UDP destination port
    (0x15, 0, 1, SERVER_PORT),  # jeq #67  else drop
    (0x06, 0, 0, MAX_PACKET),  # ret: pass (this many bytes at most)
    (0x06, 0, 0, 0),  # ret: drop
)


def _attach_filter(sock: socket.socket) -> None:
    program = b"".join(struct.pack("HBBI", *instruction) for instruction in _FILTER)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(_FILTER), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class RateLimit:
    """A token bucket: ``rate`` a second, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class HttpBootProxy:
    """Proxy offers to UEFI HTTP Boot clients on ``interface`` (a thread of its own)."""

    def __init__(self, interface: str, server: str, url: str) -> None:
        proxy_offer(Discover(0, 0, bytes(16), None), server, url)  # refuse a bad URL now
        self.interface, self.server, self.url = interface, server, url
        self.limit = RateLimit(OFFER_RATE, OFFER_BURST)
        self.offers = 0  # offers sent
        self._refused = 0  # requests over the rate since the last log line
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        try:
            _attach_filter(sock)
            sock.bind((self.interface, ETH_P_IP))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="http-boot-proxy", daemon=True
        )
        self._thread.start()
        log.info("UEFI HTTP Boot proxy offers on %s: %s", self.interface, self.url)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        self._sock = self._thread = None

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.5)
            if not ready:
                continue
            try:
                packet, where = sock.recvfrom(MAX_PACKET)
            except OSError as exc:
                log.warning("HTTP Boot proxy: reading %s: %s", self.interface, exc)
                continue
            if where[2] == socket.PACKET_OUTGOING:  # our own offers, seen on the way out
                continue
            self.handle(packet)

    def handle(self, packet: bytes) -> bytes | None:
        """Answer one IPv4 ``packet``; the offer sent, if any."""
        payload = udp_payload_to_server(packet)
        discover = None if payload is None else parse_discover(payload)
        if discover is None:
            return None
        if not self.limit.take():
            self._refused += 1
            if self._refused == 1:
                log.warning(
                    "HTTP Boot proxy: more than %g requests a second; the rest get no offer",
                    OFFER_RATE,
                )
            return None
        if self._refused:
            log.info("HTTP Boot proxy: %d requests went unanswered over the rate", self._refused)
            self._refused = 0
        offer = proxy_offer(discover, self.server, self.url)
        mac = discover.chaddr[:6].hex(":")
        if self._sock is not None:
            destination = (self.interface, ETH_P_IP, 0, 0, b"\xff" * 6)
            try:
                self._sock.sendto(udp_datagram(self.server, offer), destination)
            except OSError as exc:
                log.warning("HTTP Boot proxy: offer to %s not sent: %s", mac, exc)
                return None
        self.offers += 1
        log.info("HTTP Boot proxy: offered %s to %s", self.url, mac)
        return offer
