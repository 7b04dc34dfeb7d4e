"""RFC 7440 windowsize on the socket-free transfer: negotiation and its bound, whole windows,
partial and duplicate ACKs, block numbers rolling over past 65535, resends, refusals."""

from __future__ import annotations

import struct

import pytest

from pxe_server.tftp import MAX_WINDOWSIZE
from pxe_server.tftp_protocol import MemorySource, Transfer, negotiate, parse_request


def ack(block: int) -> bytes:
    return struct.pack("!HH", 4, block & 0xFFFF)


def blocks(packets: list[bytes]) -> list[int]:
    """The block numbers of DATA PACKETS, as on the wire."""
    assert all(packet[:2] == b"\0\x03" for packet in packets)
    return [struct.unpack("!H", packet[2:4])[0] for packet in packets]


def windowed(size: int, window: int, blksize: int = 8) -> Transfer:
    """A transfer of SIZE bytes (byte i is i % 251) with WINDOW granted, its OACK ACKed."""
    content = bytes(index % 251 for index in range(size))
    options = {"blksize": blksize, "windowsize": window}
    t = Transfer(MemorySource(content), options, timeout=1, retries=4, now=0.0)
    assert t.start(0.0) == [b"\0\x06blksize\0%d\0windowsize\0%d\0" % (blksize, window)]
    return t


def test_windowsize_is_granted_up_to_the_servers_bound() -> None:
    assert MAX_WINDOWSIZE == 64
    assert negotiate({"windowsize": "16"}, 100, 3, MAX_WINDOWSIZE) == {"windowsize": 16}
    assert negotiate({"windowsize": "1"}, 100, 3, MAX_WINDOWSIZE) == {"windowsize": 1}
    assert negotiate({"windowsize": "65535"}, 100, 3, MAX_WINDOWSIZE) == {"windowsize": 64}
    assert negotiate({"windowsize": "4"}, 100, 3) == {}  # a server bound of 1: not taken
    requested = {"blksize": "1468", "tsize": "0", "timeout": "2", "windowsize": "4"}
    assert negotiate(requested, 10_000, 3, 64) == {
        "blksize": 1468,
        "tsize": 10_000,
        "timeout": 2,
        "windowsize": 4,
    }


@pytest.mark.parametrize("value", ["0", "-4", "four", "4.0", " 4", "", "99999999999", "٤"])
def test_a_windowsize_that_is_no_positive_number_is_not_acknowledged(value: str) -> None:
    assert negotiate({"windowsize": value}, 100, 3, 64) == {}


def test_the_option_arrives_through_a_request_in_any_case() -> None:
    request = parse_request(b"\0\x01install.img\0octet\0WindowSize\x0016\0blksize\x001468\0")
    assert negotiate(request.options, 50, 3, 64) == {"windowsize": 16, "blksize": 1468}


def test_a_whole_window_goes_out_and_the_ack_of_its_last_block_brings_the_next() -> None:
    t = windowed(8 * 40, 16)  # 40 full blocks and an empty 41st
    assert blocks(t.receive(ack(0), 0.0)) == list(range(1, 17))
    assert blocks(t.receive(ack(16), 0.1)) == list(range(17, 33))
    assert blocks(t.receive(ack(32), 0.2)) == list(range(33, 42))  # the last, shorter window
    assert not t.done
    assert t.receive(ack(41), 0.3) == []
    assert (t.done, t.error, t.delivered) == (True, None, 320)


def test_each_blocks_bytes_are_the_files() -> None:
    t = windowed(100, 4, blksize=30)
    packets = t.receive(ack(0), 0.0)
    content = bytes(index % 251 for index in range(100))
    assert [packet[4:] for packet in packets] == [
        content[0:30],
        content[30:60],
        content[60:90],
        content[90:100],
    ]


def test_a_partial_ack_resumes_from_the_block_after_it() -> None:
    """The client got blocks to 5 in order (6 was lost): the next window starts at 6."""
    t = windowed(8 * 100, 8)
    t.receive(ack(0), 0.0)
    assert blocks(t.receive(ack(5), 0.1)) == list(range(6, 14))
    assert (t.acked, t.sent, t.tries) == (5, 13, 0)


def test_duplicate_stale_and_future_acks_are_never_answered() -> None:
    t = windowed(8 * 100, 8)
    t.receive(ack(0), 0.0)
    t.receive(ack(8), 0.1)  # blocks 9..16 in flight
    assert t.receive(ack(8), 0.2) == []  # the same ACK again
    assert t.receive(ack(3), 0.2) == []  # an older one
    assert t.receive(ack(17), 0.2) == []  # one never sent
    assert t.receive(ack(0), 0.2) == []
    assert (t.acked, t.sent) == (8, 16)
    assert blocks(t.receive(ack(16), 0.3)) == list(range(17, 25))


def test_the_timer_resends_the_whole_window_a_bounded_number_of_times() -> None:
    t = windowed(8 * 100, 4)
    first = t.receive(ack(0), 0.0)
    assert t.expire(0.5) == []
    for attempt in range(1, 5):
        assert t.expire(float(attempt)) == first
    assert t.expire(5.0) is None
    assert (t.done, t.error) == (True, "no ACK after 4 retransmissions, 1s apart")


def test_a_resend_then_a_partial_ack_moves_on_from_it() -> None:
    t = windowed(8 * 100, 4)
    t.receive(ack(0), 0.0)
    assert blocks(t.expire(1.0) or []) == [1, 2, 3, 4]
    assert blocks(t.receive(ack(2), 1.1)) == [3, 4, 5, 6]
    assert (t.tries, t.waiting_since) == (0, 1.1)


def up_to_65530(t: Transfer) -> None:
    """Drive T (windows of 10) until blocks 1 to 65,530 are sent and 65,520 ACKed."""
    t.receive(ack(0), 0.0)
    while t.sent < 65_530:
        t.receive(ack(t.sent), 0.0)
    assert (t.acked, t.sent) == (65_520, 65_530)


def test_block_numbers_roll_over_past_65535_within_a_window() -> None:
    """70,000 blocks of 1 byte in windows of 10: the window after 65,530 carries 65,531 to
    65,535 and then 0 to 4 on the wire (blocks 65,536 to 65,540)."""
    t = windowed(70_000, 10, blksize=1)
    up_to_65530(t)
    assert blocks(t.receive(ack(65_530), 0.0)) == [*range(65_531, 65_536), *range(0, 5)]
    assert blocks(t.receive(ack(4), 0.0)) == list(range(5, 15))  # the ACK of block 65,540
    assert (t.acked, t.sent) == (65_540, 65_550)


def test_partial_acks_on_either_side_of_zero() -> None:
    t = windowed(70_000, 10, blksize=1)
    up_to_65530(t)
    t.receive(ack(65_530), 0.0)  # blocks 65,531 to 65,540 in flight
    assert blocks(t.receive(ack(65_533), 0.0)) == [65_534, 65_535, *range(0, 8)]
    assert t.acked == 65_533
    assert blocks(t.receive(ack(2), 0.0)) == list(range(3, 13))  # 2 is block 65,538
    assert t.acked == 65_538
    assert t.receive(ack(65_535), 0.0) == []  # block 65,535: stale now
    assert t.receive(ack(13), 0.0) == []  # block 65,549: not sent yet
    assert (t.acked, t.sent) == (65_538, 65_548)


def test_the_end_of_a_file_on_a_window_boundary_sends_one_empty_block() -> None:
    t = windowed(8 * 4, 4)
    assert blocks(t.receive(ack(0), 0.0)) == [1, 2, 3, 4]
    assert t.receive(ack(4), 0.0) == [b"\0\x03\0\x05"]
    assert t.receive(ack(5), 0.0) == []
    assert t.done
