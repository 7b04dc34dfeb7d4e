"""UEFI HTTP Boot's proxy offers (pxe_server.http_boot_proxy): what is answered, what the
offer says, the packets around it, the rate bound and hostile input."""

from __future__ import annotations

import os
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxe_server import http_boot_proxy as proxy
from pxe_server.http_boot_proxy import (
    Discover,
    HttpBootProxy,
    RateLimit,
    parse_discover,
    proxy_offer,
    udp_datagram,
    udp_payload_to_server,
)

SERVER = "192.168.77.1"
URL = f"http://{SERVER}:8080/http-boot/grubx64.efi"
MAC = bytes.fromhex("525400770123")


def request(
    vendor: bytes = b"HTTPClient:Arch:00016:UNDI:003001",
    kind: int = 1,
    giaddr: bytes = bytes(4),
    uuid: bytes | None = None,
    op: int = 1,
) -> bytes:
    head = struct.pack("!BBBBIHH4s4s4s4s16s", op, 1, 6, 0, 0x12345678, 3, 0x8000,
                       bytes(4), bytes(4), bytes(4), giaddr, MAC + bytes(10))  # fmt: skip
    opts = bytes([53, 1, kind, 60, len(vendor)]) + vendor + bytes([93, 2, 0, 16])
    if uuid is not None:
        opts += bytes([97, len(uuid)]) + uuid
    return head + bytes(192) + proxy.MAGIC + opts + b"\xff"


def options_of(message: bytes) -> dict[int, bytes]:
    found = proxy.options(message[240:])
    assert found is not None
    return found


def test_an_http_boot_discover_gets_a_proxy_offer_edk2_takes() -> None:
    uuid = bytes([0]) + os.urandom(16)
    discover = parse_discover(request(uuid=uuid))
    assert discover == Discover(0x12345678, 0x8000, MAC + bytes(10), uuid)
    offer = proxy_offer(discover, SERVER, URL)
    assert len(offer) >= proxy.MIN_BOOTP
    assert offer[0] == 2  # a reply
    assert struct.unpack_from("!I", offer, 4)[0] == 0x12345678  # the client's xid
    assert struct.unpack_from("!H", offer, 10)[0] == 0x8000  # its broadcast flag
    assert offer[16:20] == bytes(4)  # yiaddr 0: a proxy offer, no address
    assert offer[20:24] == socket.inet_aton(SERVER)  # siaddr
    assert offer[28:34] == MAC
    found = options_of(offer)
    assert found[53] == bytes([proxy.OFFER])
    assert found[54] == socket.inet_aton(SERVER)
    assert found[60] == b"HTTPClient"  # edk2 takes an offer as HTTP boot's only with it
    assert found[67] == URL.encode()  # the boot URI, an IP address in it: "proxy IP URI"
    assert found[97] == uuid


@pytest.mark.parametrize(
    "message",
    [
        request(vendor=b"PXEClient:Arch:00007:UNDI:003016"),  # dnsmasq's
        request(vendor=b"MSFT 5.0"),
        request(kind=3),  # a DHCPREQUEST: edk2 requests its lease from the site's server
        request(giaddr=socket.inet_aton("10.0.0.1")),  # relayed: not ours to answer
        request(op=2),  # a reply
        request()[:-40],  # options cut short
        request()[:200],
        b"",
        bytes(2000),
    ],
)
def test_anything_else_gets_nothing(message: bytes) -> None:
    assert parse_discover(message) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_hostile_bytes_are_refused_quietly(data: bytes) -> None:
    head = request()[:240]
    parse_discover(data)
    parse_discover(head + data)  # options of any shape after a valid header
    udp_payload_to_server(data)


def test_the_offer_travels_as_a_broadcast_from_port_67_with_valid_checksums() -> None:
    payload = b"x" * 301
    packet = udp_datagram(SERVER, payload)
    assert proxy._checksum(packet[:20]) == 0  # the IP header's checksum holds
    assert packet[12:16] == socket.inet_aton(SERVER)
    assert packet[16:20] == b"\xff" * 4
    sport, dport, length, _ = struct.unpack_from("!HHHH", packet, 20)
    assert (sport, dport, length) == (67, 68, 8 + len(payload))
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 17, length)
    assert proxy._checksum(pseudo + packet[20:]) == 0  # the UDP checksum holds
    # The reading side takes only what goes to port 67.
    assert udp_payload_to_server(packet) is None
    to_server = packet[:20] + struct.pack("!HHHH", 68, 67, length, 0) + payload
    assert udp_payload_to_server(to_server) == payload
    fragment = to_server[:6] + b"\x00\x10" + to_server[8:]
    assert udp_payload_to_server(fragment) is None  # a later fragment has no UDP header


def test_the_rate_is_bounded_and_refills() -> None:
    limit = RateLimit(rate=10.0, burst=3)
    start = limit._at
    assert [limit.take(start) for _ in range(4)] == [True, True, True, False]
    assert limit.take(start + 0.05) is False  # half a token back
    assert limit.take(start + 0.15) is True
    assert limit.take(start + 100) is True
    assert sum(limit.take(start + 100) for _ in range(10)) == 2  # never more than the burst


def test_a_flood_gets_at_most_the_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    responder = HttpBootProxy("eth0", SERVER, URL)  # not started: no socket, nothing sent
    monkeypatch.setattr(responder.limit, "rate", 0.0)
    frame = udp_datagram("192.168.77.99", request())  # (ports swapped below: to the server)
    frame = frame[:20] + struct.pack("!HHHH", 68, 67, 8 + len(request()), 0) + frame[28:]
    answered = [responder.handle(frame) for _ in range(proxy.OFFER_BURST + 20)]
    assert sum(a is not None for a in answered) == proxy.OFFER_BURST
    assert responder.offers == proxy.OFFER_BURST


def test_a_url_that_cannot_be_offered_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="1-255 ASCII"):
        HttpBootProxy("eth0", SERVER, "http://x/" + "a" * 300)
    with pytest.raises(ValueError, match="IPv4"):
        HttpBootProxy("eth0", "fd77::1", URL)  # DHCPv4 offers name an IPv4 server
