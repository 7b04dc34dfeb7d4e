"""pxe_server/grub_tcp.py: which SYNs named an MSS, the MSS given, and the socket calls made.

The real kernel's answer is in tests/integration/test_grub_segments.py; here a fake
socket records the calls, so every failure path is taken without root.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxe_server import grub_tcp
from pxe_server.grub_tcp import Outcome, WholeSegments

TCP = socket.IPPROTO_TCP


def syn(options: bytes = b"", *, flags: int = 0x02, version: int = 4, proto: int = 6) -> bytes:
    """An IPv4 header and a TCP SYN with ``options`` (padded to 32-bit words)."""
    options += b"\0" * (-len(options) % 4)
    tcp = struct.pack(
        "!HHIIBBHHH", 21550, 8080, 56, 0, (5 + len(options) // 4) << 4, flags, 8192, 0, 0
    )
    ip = struct.pack("!BBHHHBBH4s4s", (version << 4) | 5, 0, 40 + len(options), 0, 0, 64, proto, 0,
                     bytes(4), bytes(4))  # fmt: skip
    return ip + tcp + options


GRUB_SYN = syn()  # GRUB 2.06: no options at all
LINUX_SYN = syn(bytes([2, 4, 0x05, 0xB4, 4, 2, 8, 10]) + bytes(8) + bytes([1, 3, 3, 7]))
IPXE_SYN = syn(bytes([1, 1, 2, 4, 0x05, 0xB4]))  # no-ops before the MSS


@pytest.mark.parametrize(
    ("packet", "named"),
    [
        (GRUB_SYN, False),
        (LINUX_SYN, True),
        (IPXE_SYN, True),
        (syn(bytes([1, 1, 1, 0])), False),  # no-ops and the end of options
        (syn(bytes([4, 2, 8, 10]) + bytes(8)), False),  # SACK permitted, timestamps: no MSS
        (syn(bytes([0, 2, 4, 5, 0xB4])), False),  # an MSS after the end of options is none
        (syn(bytes([8, 0])), True),  # a length under 2: malformed, left alone
        (syn(bytes([8])), True),  # a kind without its length: malformed
        (syn(flags=0x10), True),  # not a SYN
        (syn(version=6), True),
        (syn(proto=17), True),
        (GRUB_SYN[:39], True),  # cut short
        (b"", True),
    ],
)
def test_which_syns_name_an_mss(packet: bytes, named: bool) -> None:
    assert grub_tcp.syn_names_mss(packet) is named


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_any_bytes_are_read_without_an_error(packet: bytes) -> None:
    assert isinstance(grub_tcp.syn_names_mss(packet), bool)


OPTION = st.one_of(
    st.just(b"\x01"),  # no-op
    st.builds(
        lambda kind, data: bytes([kind, len(data) + 2]) + data,
        st.integers(3, 254),
        st.binary(max_size=6),
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(OPTION, max_size=6), st.booleans())
def test_well_formed_options_name_an_mss_only_when_one_is_there(
    others: list[bytes], with_mss: bool
) -> None:
    mss = bytes([2, 4, 0x05, 0xB4]) if with_mss else b""
    listed = mss + b"".join(others)
    if len(listed) > 40:
        return  # no room in a TCP header
    packet = syn(listed)
    assert grub_tcp.syn_names_mss(packet) is with_mss


@pytest.mark.parametrize(
    ("mtu", "mss"),
    [(1500, 1460), (9000, grub_tcp.GRUB_MSS), (1400, 1360), (576, 536), (300, 536)],
)
def test_the_mss_given_is_the_route_s_but_at_most_an_ethernet_frame(mtu: int, mss: int) -> None:
    assert grub_tcp.segment_size(mtu) == mss


class FakeSocket:
    """Records setsockopt calls; answers getsockopt from ``answers``; fails where told."""

    def __init__(
        self,
        saved_syn: bytes = GRUB_SYN,
        *,
        family: int = socket.AF_INET,
        mtu: int = 1500,
        fail: dict[tuple[int, int, object], int] | None = None,
    ) -> None:
        self.family = family
        self.saved_syn = saved_syn
        self.mtu = mtu
        self.fail = fail or {}
        self.calls: list[tuple[int, int, object]] = []
        self.mss = 536

    def getsockopt(self, level: int, name: int, buflen: int = 0) -> bytes:
        if (level, name) == (TCP, grub_tcp.TCP_SAVED_SYN):
            saved, self.saved_syn = self.saved_syn, b""  # the kernel hands it out once
            return saved
        if (level, name) == (socket.IPPROTO_IP, grub_tcp.IP_MTU):
            return struct.pack("i", self.mtu)
        if (level, name) == (TCP, socket.TCP_MAXSEG):
            return struct.pack("i", self.mss)
        raise AssertionError(f"unexpected getsockopt {level} {name}")

    def setsockopt(self, level: int, name: int, value: int | bytes) -> None:
        call = (level, name, value)
        self.calls.append(call)
        if call in self.fail:
            raise OSError(self.fail[call], "refused")
        if (level, name) == (TCP, grub_tcp.TCP_REPAIR_OPTIONS):
            self.pending = struct.unpack("II", bytes(value))[1]  # type: ignore[arg-type]
        if (level, name) == (socket.IPPROTO_IP, socket.IP_OPTIONS):
            self.mss = getattr(self, "pending", self.mss)


REPAIR_ON = (TCP, grub_tcp.TCP_REPAIR, grub_tcp.TCP_REPAIR_ON)
REPAIR_OFF = (TCP, grub_tcp.TCP_REPAIR, grub_tcp.TCP_REPAIR_OFF_NO_WP)
REUSE = (socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def options(mss: int) -> tuple[int, int, object]:
    return (TCP, grub_tcp.TCP_REPAIR_OPTIONS, struct.pack("II", grub_tcp.TCPOPT_MSS, mss))


def test_grub_s_connection_is_raised_and_leaves_repair_mode() -> None:
    sock, policy = FakeSocket(), WholeSegments()
    assert policy.apply(sock) == (Outcome.RAISED, 1460)
    assert sock.calls == [
        REPAIR_ON, options(1460), REPAIR_OFF, REUSE, (socket.IPPROTO_IP, socket.IP_OPTIONS, b""),
    ]  # fmt: skip
    assert policy.raised == 1
    # the saved SYN is read once: the connection's next request changes nothing
    assert policy.apply(sock) == (Outcome.NAMED, 0)
    assert len(sock.calls) == 5


def test_a_client_that_named_its_mss_is_not_touched() -> None:
    for packet in (LINUX_SYN, IPXE_SYN, b""):
        sock = FakeSocket(packet)
        assert WholeSegments().apply(sock)[0] is Outcome.NAMED
        assert sock.calls == []


def test_ipv6_sockets_are_not_touched() -> None:
    sock = FakeSocket(family=socket.AF_INET6)
    assert WholeSegments().apply(sock)[0] is Outcome.NOT_IPV4
    assert sock.calls == []


def test_without_cap_net_admin_it_says_so_once_and_stops_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = WholeSegments()
    with caplog.at_level(logging.WARNING, logger="netinstall.http"):
        for _ in range(3):
            sock = FakeSocket(fail={REPAIR_ON: errno.EPERM})
            assert policy.apply(sock)[0] is Outcome.NOT_PERMITTED
    assert policy.permitted is False
    assert len([r for r in caplog.records if "CAP_NET_ADMIN" in r.getMessage()]) == 1
    assert sock.calls == []  # the third connection was not tried


def test_a_refused_mss_still_leaves_repair_mode() -> None:
    """Repair mode sends nothing: a connection left in it would hang its client."""
    sock = FakeSocket(fail={options(1460): errno.EPERM})  # e.g. data sent already
    policy = WholeSegments()
    assert policy.apply(sock)[0] is Outcome.FAILED
    assert sock.calls[-2:] == [REPAIR_OFF, REUSE]
    assert policy.permitted is True
    assert policy.raised == 0


def test_another_repair_error_does_not_disable_the_policy() -> None:
    sock, policy = FakeSocket(fail={REPAIR_ON: errno.EINVAL}), WholeSegments()
    assert policy.apply(sock)[0] is Outcome.FAILED
    assert policy.permitted is True


def test_a_jumbo_route_still_gets_an_ethernet_frame() -> None:
    sock = FakeSocket(mtu=9000)
    assert WholeSegments().apply(sock) == (Outcome.RAISED, grub_tcp.GRUB_MSS)
    assert options(grub_tcp.GRUB_MSS) in sock.calls
