"""The TFTP server under a hostile network: a flood of abandoned transfers from many
addresses while a real client (curl) fetches a boot loader and a 70 MB file, and fuzzed
datagrams, first ones and in-transfer ones, against a live server.

The figures of the flood (how much slower the real client is under it) are printed, and
kept in the README ("TFTP limits").
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxe_server.tftp import (
    DEFAULT_TIMEOUT,
    MAX_RETRIES,
    MAX_TRANSFERS,
    SPARE_SOCKETS,
    TftpServer,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl (the TFTP client) is missing"),
]

HOST = "127.0.0.1"
PXELINUX = Path("/usr/lib/PXELINUX/pxelinux.0")
BIG = 70_000_000  # bytes: about the installer's initrd
FLOOD = 1000  # abandoned transfers, one per source address in 127.0.0.0/8
FLOOD_RATE = 200  # requests per second: the flood goes on while the real client fetches
CLIENT_AFTER = 600  # the real client asks once this many are in: the server is full
FLOOD_BLKSIZES = (512, 1024, 1428, 1468, 8192, 65464)
# A real client under the flood: every file byte-identical, the 70 MB one within this.
BIG_UNDER_FLOOD = 45.0  # seconds
SMALL_UNDER_FLOOD = 5.0  # seconds for the boot loader
# An abandoned transfer is dropped after MAX_RETRIES resends DEFAULT_TIMEOUT apart (the
# flood asks timeout=255, which is not granted); a second's slack for the loop's tick.
RECLAIMED_WITHIN = (MAX_RETRIES + 1) * DEFAULT_TIMEOUT + 1.5


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("netboot")
    loader = PXELINUX.read_bytes() if PXELINUX.is_file() else os.urandom(46_000)
    (root / "pxelinux.0").write_bytes(loader)
    with (root / "install.img").open("wb") as out:
        for _ in range(BIG // 1_000_000):
            out.write(os.urandom(1_000_000))
    (root / "boot").mkdir()
    (root / "boot" / "vmlinuz").write_bytes(os.urandom(300_000))
    return root


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def curl_get(port: int, name: str, out: Path, blksize: int = 512) -> float:
    """Fetch NAME with curl (a real TFTP client); the seconds it took."""
    out.unlink(missing_ok=True)
    start = time.monotonic()
    subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "80",
            "--tftp-blksize",
            str(blksize),
            "-o",
            str(out),
            f"tftp://{HOST}:{port}/{name}",
        ],
        check=True,
        timeout=90,
    )
    return time.monotonic() - start


def rrq(name: str, **options: int) -> bytes:
    fields = [name, "octet", *(f"{key}\0{value}" for key, value in options.items())]
    return b"\0\x01" + "".join(f"{field}\0" for field in fields).encode()


def flood_address(index: int) -> str:
    return f"127.{1 + index // 62500}.{index // 250 % 250 + 1}.{index % 250 + 1}"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Flood(threading.Thread):
    """FLOOD read requests that never ACK, each from an address of its own, keeping their
    sockets open (no ICMP tells the server they are gone)."""

    def __init__(self, port: int) -> None:
        super().__init__(name="tftp-flood", daemon=True)
        self.port = port
        self.sockets: list[socket.socket] = []
        self.sent = 0
        self.finished_at = 0.0
        self.started_at = 0.0

    def run(self) -> None:
        names = ["install.img", "pxelinux.0", "boot/vmlinuz"]
        self.started_at = time.monotonic()
        for index in range(FLOOD):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((flood_address(index), 0))
            blksize = FLOOD_BLKSIZES[index % len(FLOOD_BLKSIZES)]
            packet = rrq(names[index % 3], blksize=blksize, timeout=255, tsize=0)
            sock.sendto(packet, (HOST, self.port))
            self.sockets.append(sock)
            self.sent += 1
            delay = self.started_at + (index + 1) / FLOOD_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.finished_at = time.monotonic()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def test_a_real_client_is_served_through_a_flood_of_abandoned_transfers(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert CLIENT_AFTER > MAX_TRANSFERS  # the server is full when the client asks
    caplog.set_level(logging.INFO, logger="netinstall.tftp")
    server = TftpServer(tree, lambda path, client: None, host=HOST, port=0)
    server.start()
    flood = Flood(server.port)
    try:
        baseline_fds = open_fds()
        small = tmp_path / "pxelinux.0"
        big = tmp_path / "install.img"
        quiet_small = curl_get(server.port, "pxelinux.0", small)
        quiet_big = curl_get(server.port, "install.img", big, blksize=1468)
        assert digest(big) == digest(tree / "install.img")

        flood.start()
        while flood.sent < CLIENT_AFTER:
            time.sleep(0.01)
        flooded_small = curl_get(server.port, "pxelinux.0", small)
        assert digest(small) == digest(tree / "pxelinux.0")
        overlap = flood.sent  # when the big fetch starts, the flood must still be going on
        flooded_big = curl_get(server.port, "install.img", big, blksize=1468)
        assert digest(big) == digest(tree / "install.img")
        flood.join()

        deadline = flood.finished_at + RECLAIMED_WITHIN
        # every transfer's socket closed, but the idle ones kept for the next transfers
        kept = baseline_fds + SPARE_SOCKETS
        while open_fds() - len(flood.sockets) > kept and time.monotonic() < deadline:
            time.sleep(0.1)
        reclaimed = time.monotonic() - flood.finished_at
        leftover = open_fds() - len(flood.sockets) - kept
    finally:
        server.stop()
        flood.close()

    with capsys.disabled():
        print(
            f"\nTFTP flood: {FLOOD} abandoned requests from {FLOOD} addresses over "
            f"{flood.finished_at - flood.started_at:.1f}s; the client asked after {CLIENT_AFTER}, "
            f"{overlap} were in when it asked for the big file"
            f"\n  pxelinux.0 ({small.stat().st_size} B): {quiet_small:.2f}s alone, "
            f"{flooded_small:.2f}s under the flood"
            f"\n  install.img ({BIG // 1_000_000} MB, blksize 1468): {quiet_big:.2f}s alone, "
            f"{flooded_big:.2f}s under the flood ({flooded_big / quiet_big:.1f}x)"
            f"\n  every abandoned transfer reclaimed {reclaimed:.1f}s after the last request"
        )
    assert leftover <= 0, f"{leftover} descriptors still open {RECLAIMED_WITHIN}s after the flood"
    assert flooded_small < SMALL_UNDER_FLOOD
    assert flooded_big < BIG_UNDER_FLOOD
    assert overlap < FLOOD, "the flood ended before the client's big fetch: it proved nothing"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# -- fuzzed datagrams against a live server ------------------------------------------------

NAMES = st.sampled_from(
    ["pxelinux.0", "/pxelinux.0", "boot/vmlinuz", "missing", "../etc/passwd", "boot", "a\\b", ""]
)
OPTION_NAMES = st.sampled_from(["blksize", "tsize", "timeout", "windowsize", "BLKSIZE", "x"])
OPTION_VALUES = st.one_of(
    st.integers(-5, 70_000).map(str), st.sampled_from(["", "0", "255", "١٢", "9" * 30, "1e3"])
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    opcode = draw(st.sampled_from([1, 1, 1, 2, 3, 4, 5, 6, 0, 7, 65535]))
    name = draw(st.one_of(NAMES, st.text(max_size=40))).encode("utf-8", "surrogatepass")
    mode = draw(st.sampled_from([b"octet", b"netascii", b"OCTET", b"mail", b""]))
    options = draw(st.lists(st.tuples(OPTION_NAMES, OPTION_VALUES), max_size=4))
    body = name + b"\0" + mode + b"\0" + b"".join(f"{k}\0{v}\0".encode() for k, v in options)
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    return struct.pack("!H", opcode) + body


FIRST_DATAGRAMS = st.one_of(requests(), st.binary(max_size=600))


@st.composite
def in_transfer(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["ack", "error", "data", "binary"]))
    if kind == "ack":
        return struct.pack("!HH", 4, draw(st.integers(0, 65535))) + draw(st.binary(max_size=3))
    if kind == "error":
        return struct.pack("!HH", 5, draw(st.integers(0, 9))) + draw(st.binary(max_size=20))
    if kind == "data":
        return struct.pack("!HH", 3, draw(st.integers(0, 65535))) + draw(st.binary(max_size=50))
    return draw(st.binary(max_size=100))


@contextmanager
def live_server(root: Path) -> Iterator[TftpServer]:
    server = TftpServer(root, lambda path, client: None, host=HOST, port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fresh_addresses(second: int) -> Iterator[str]:
    """Addresses of their own for the examples of one fuzz test (the per-address cap)."""
    for index in itertools.count():
        yield f"127.{second}.{index // 250 % 250}.{index % 250 + 1}"


def drain(sock: socket.socket, seconds: float) -> list[bytes]:
    sock.settimeout(seconds)
    replies = []
    try:
        while True:
            replies.append(sock.recvfrom(65536)[0])
    except TimeoutError:
        return replies


def tree_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def still_serves(server: TftpServer, tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "check"
    curl_get(server.port, "boot/vmlinuz", out, blksize=1468)
    assert digest(out) == digest(tree / "boot" / "vmlinuz")


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad[0].getMessage()


def test_fuzzed_first_datagrams(
    tree: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = tree_digests(tree)
    addresses = fresh_addresses(2)
    with live_server(tree) as server:

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(datagram=FIRST_DATAGRAMS)
        def check(datagram: bytes) -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((next(addresses), 0))
                sock.sendto(datagram, (HOST, server.port))
                for reply in drain(sock, 0.005):
                    assert reply[:2] in (b"\0\x03", b"\0\x05", b"\0\x06"), reply[:20]

        check()
        still_serves(server, tree, tmp_path)
    assert tree_digests(tree) == before
    no_tracebacks(caplog)


def test_fuzzed_datagrams_inside_transfers(
    tree: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = tree_digests(tree)
    addresses = fresh_addresses(3)
    with live_server(tree) as server:

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            blksize=st.sampled_from([8, 512, 1468]),
            datagrams=st.lists(st.tuples(in_transfer(), st.booleans()), min_size=1, max_size=8),
        )
        def check(blksize: int, datagrams: list[tuple[bytes, bool]]) -> None:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
            ):
                sock.bind((next(addresses), 0))
                sock.settimeout(5)
                sock.sendto(rrq("boot/vmlinuz", blksize=blksize), (HOST, server.port))
                first, peer = sock.recvfrom(65536)
                assert first[:2] == b"\0\x06"
                for datagram, from_stranger in datagrams:
                    (stranger if from_stranger else sock).sendto(datagram, peer)
                for reply in drain(stranger, 0.002):
                    assert reply[:4] == b"\0\x05\0\x05"  # unknown transfer ID, and nothing else
                for reply in drain(sock, 0.002):
                    assert reply[:2] in (b"\0\x03", b"\0\x05", b"\0\x06")
                    if reply[:2] == b"\0\x03":
                        block = struct.unpack("!H", reply[2:4])[0]
                        offset = (block - 1) * blksize
                        expected = (tree / "boot" / "vmlinuz").read_bytes()[offset:][:blksize]
                        assert reply[4:] == expected

        check()
        still_serves(server, tree, tmp_path)
    assert tree_digests(tree) == before
    no_tracebacks(caplog)
