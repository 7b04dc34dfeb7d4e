"""One TFTP read transfer without a network: blocks, ACKs, OACK, retransmission, the end;
and the pure parts fuzzed (hypothesis, bounded) with the crashes found kept as cases."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pxe_server.tftp_protocol import (
    ILLEGAL_OPERATION,
    MemorySource,
    Refusal,
    Request,
    Transfer,
    error_packet,
    negotiate,
    parse_request,
)


def ack(block: int) -> bytes:
    return struct.pack("!HH", 4, block)


def data(block: int, payload: bytes) -> bytes:
    return struct.pack("!HH", 3, block) + payload


def transfer(content: bytes, options: dict[str, int] | None = None) -> Transfer:
    return Transfer(MemorySource(content), options or {}, timeout=1, retries=4, now=0.0)


def test_lockstep_without_options_ends_on_a_short_block() -> None:
    t = transfer(b"a" * 1000)
    assert t.start(0.0) == [data(1, b"a" * 512)]
    assert t.receive(ack(1), 0.1) == [data(2, b"a" * 488)]
    assert not t.done
    assert t.receive(ack(2), 0.2) == []
    assert t.done
    assert t.error is None
    assert t.delivered == 1000


def test_a_size_on_a_block_boundary_ends_with_an_empty_block() -> None:
    t = transfer(b"b" * 1024)
    t.start(0.0)
    assert t.receive(ack(1), 0.0) == [data(2, b"b" * 512)]
    assert t.receive(ack(2), 0.0) == [data(3, b"")]
    assert t.receive(ack(3), 0.0) == []
    assert t.done


def test_oack_first_then_blocks_of_the_granted_size() -> None:
    t = transfer(b"c" * 20, {"blksize": 8, "tsize": 20})
    assert t.start(0.0) == [b"\0\x06blksize\x008\0tsize\x0020\0"]
    assert t.receive(ack(1), 0.0) == []  # only ACK 0 answers the OACK
    assert t.receive(ack(0), 0.0) == [data(1, b"c" * 8)]
    assert t.receive(ack(1), 0.0) == [data(2, b"c" * 8)]
    assert t.receive(ack(2), 0.0) == [data(3, b"c" * 4)]


def test_duplicate_and_stale_acks_are_never_answered() -> None:
    """RFC 1350's Sorcerer's Apprentice: only the timer resends."""
    t = transfer(b"d" * 2000)
    t.start(0.0)
    assert t.receive(ack(1), 0.0) == [data(2, b"d" * 512)]
    assert t.receive(ack(1), 0.0) == []
    assert t.receive(ack(0), 0.0) == []
    assert t.receive(ack(7), 0.0) == []
    assert t.receive(ack(2) + b"trailing", 0.0) == [data(3, b"d" * 512)]


def test_block_numbers_roll_over_to_zero() -> None:
    t = transfer(bytes(70_000), {"blksize": 1})  # 70,001 blocks
    t.start(0.0)
    for block in range(65_535):
        t.receive(ack(0) if block == 0 else ack(block), 0.0)
    assert t.sent == 65_535
    assert t.receive(ack(65_535), 0.0) == [data(0, b"\0")]  # block 65,536 on the wire
    assert t.receive(ack(0), 0.0) == [data(1, b"\0")]  # and 65,537
    assert t.acked == 65_536


def test_a_window_keeps_several_blocks_in_flight_and_resends_from_the_ack() -> None:
    t = transfer(bytes(range(10)), {"blksize": 2, "windowsize": 3})
    assert t.start(0.0) == [b"\0\x06blksize\x002\0windowsize\x003\0"]
    assert t.receive(ack(0), 0.0) == [data(1, b"\0\1"), data(2, b"\2\3"), data(3, b"\4\5")]
    assert t.receive(ack(1), 0.0) == [data(2, b"\2\3"), data(3, b"\4\5"), data(4, b"\6\7")]
    assert t.receive(ack(4), 0.0) == [data(5, b"\x08\x09"), data(6, b"")]
    assert t.expire(1.0) == [data(5, b"\x08\x09"), data(6, b"")]
    assert t.receive(ack(6), 1.1) == []
    assert t.done


def test_unanswered_blocks_are_resent_a_bounded_number_of_times() -> None:
    t = transfer(b"e" * 600)
    first = t.start(0.0)
    assert t.expire(0.9) == []  # not yet due
    for attempt in range(1, 5):
        assert t.expire(float(attempt)) == first
        assert not t.done
    assert t.expire(5.0) is None
    assert t.done
    assert t.error == "no ACK after 4 retransmissions, 1s apart"


def test_progress_resets_the_retries_and_the_wait() -> None:
    t = transfer(b"f" * 2000)
    t.start(0.0)
    assert t.expire(1.0) == [data(1, b"f" * 512)]
    assert t.waiting_since == 0.0  # a resend is no progress
    t.receive(ack(1), 1.5)
    assert (t.tries, t.waiting_since, t.deadline) == (0, 1.5, 2.5)


def test_the_granted_timeout_paces_the_resends() -> None:
    t = transfer(b"g", {"timeout": 3})
    assert t.start(0.0) == [b"\0\x06timeout\x003\0"]
    assert t.expire(2.9) == []
    assert t.expire(3.0) == [b"\0\x06timeout\x003\0"]


def test_an_error_from_the_client_ends_it_and_anything_else_is_illegal() -> None:
    t = transfer(b"h" * 600)
    t.start(0.0)
    assert t.receive(error_packet(0, "cancelled\x1b"), 0.0) == []
    assert (t.done, t.error) == (True, "the client ended it: cancelled?")
    for packet in (b"", b"\0", b"\0\x04\0", b"\0\x01x\0octet\0", data(1, b"x"), b"\xff\xff"):
        t = transfer(b"h" * 600)
        t.start(0.0)
        assert t.receive(packet, 0.0) == [error_packet(ILLEGAL_OPERATION, "illegal TFTP operation")]
        assert t.done
        assert t.error == "illegal TFTP operation from the client"


# -- fuzzed (bounded: seconds) -----------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_first_datagram_is_a_request_or_a_refusal(datagram: bytes) -> None:
    try:
        request: Request | int = parse_request(datagram)
    except Refusal as refusal:
        request = refusal.code
    if isinstance(request, Request):
        accepted = negotiate(request.options, 1000, 3, 64)
        assert set(accepted) <= {"blksize", "tsize", "timeout", "windowsize"}
        assert 1 <= accepted.get("windowsize", 1) <= 64
    else:
        assert request in (2, 4)


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 3000),
    blksize=st.sampled_from([8, 512, 1468]),
    window=st.integers(1, 8),
    datagrams=st.lists(
        st.one_of(st.integers(0, 65535).map(ack), st.binary(max_size=8)), max_size=30
    ),
)
def test_any_datagrams_in_a_transfer_give_only_the_files_bytes(
    size: int, blksize: int, window: int, datagrams: list[bytes]
) -> None:
    content = bytes(index % 251 for index in range(size))
    t = transfer(content, {"blksize": blksize, "windowsize": window})
    t.start(0.0)
    t.receive(ack(0), 0.0)  # the OACK acknowledged: windows from here
    for index, datagram in enumerate(datagrams):
        for packet in t.receive(datagram, float(index)) + (t.expire(float(index) + 1) or []):
            opcode, block = struct.unpack("!HH", packet[:4])
            if opcode == 3:
                offset = (block - 1) * blksize
                assert packet[4:] == content[offset : offset + blksize]
            else:
                assert opcode in (5, 6)
        if t.done:
            break
    assert t.acked <= t.sent <= t.blocks
    assert t.delivered <= size
