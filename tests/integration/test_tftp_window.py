"""RFC 7440 windowsize on the real server: a real windowed client (atftp, from Debian's
package) receives windows, and a raw client checks them on the wire: whole windows as
separate datagrams, a partial ACK resumed from, the bound, the resend of a window, and
the one-by-one sending where the kernel refuses UDP GSO."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from images.debian import candidate_versions, download, extract
from pxe_server.tftp import MAX_WINDOWSIZE, UDP_SEGMENT, TftpServer, _Slot

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
CACHE = Path.home() / ".cache/netinstall/bench-peers"  # the benchmark's cache too


@pytest.fixture(scope="module")
def atftp() -> str:
    """atftp, the RFC 7440 client: installed, or unpacked from Debian's package."""
    found = shutil.which("atftp")
    if found:
        return found
    program = CACHE / "root/atftp/usr/bin/atftp"
    if not program.exists():
        try:
            deb = download("atftp", candidate_versions(["atftp"])["atftp"], CACHE)
            extract(deb, CACHE / "root/atftp")
        except Exception as exc:  # noqa: BLE001 - no package source here: say so, skip
            pytest.skip(f"atftp could not be fetched: {exc}")
    return str(program)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "netboot"
    root.mkdir()
    (root / "vmlinuz").write_bytes(os.urandom(1468 * 300 + 77))
    (root / "many").write_bytes(os.urandom(600_000))  # 75,001 blocks of 8: past 65,535
    return root


@pytest.fixture
def server(tree: Path) -> Iterator[TftpServer]:
    srv = TftpServer(tree, lambda path, client: None, host=HOST, port=0)
    srv.start()
    yield srv
    srv.stop()


def get(atftp: str, port: int, name: str, out: Path, *options: str) -> str:
    argv = [atftp, "--trace", "--verbose"]
    for option in options:
        argv += ["--option", option]
    argv += ["-g", "-r", name, "-l", str(out), HOST, str(port)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout + done.stderr


def acked_blocks(trace: str) -> list[int]:
    return [int(block) for block in re.findall(r"sent ACK <block: (\d+)>", trace)]


def test_atftp_receives_whole_windows(atftp: str, server: TftpServer, tree: Path) -> None:
    out = tree.parent / "out"
    trace = get(atftp, server.port, "vmlinuz", out, "blksize 1468", "windowsize 16")
    assert out.read_bytes() == (tree / "vmlinuz").read_bytes()
    # one ACK per window of 16 (the OACK's ACK 0 first), the last for the short block 301
    assert acked_blocks(trace) == [0, *range(16, 301, 16), 301]


def test_atftp_asking_past_the_bound_gets_the_bound(
    atftp: str, server: TftpServer, tree: Path
) -> None:
    out = tree.parent / "out"
    trace = get(atftp, server.port, "vmlinuz", out, "blksize 1468", "windowsize 1000")
    assert out.read_bytes() == (tree / "vmlinuz").read_bytes()
    assert acked_blocks(trace) == [0, *range(MAX_WINDOWSIZE, 301, MAX_WINDOWSIZE), 301]


def test_atftp_rolls_block_numbers_over_inside_windows(
    atftp: str, server: TftpServer, tree: Path
) -> None:
    out = tree.parent / "out"
    argv = [atftp, "--option", "blksize 8", "--option", "windowsize 7"]
    argv += ["-g", "-r", "many", "-l", str(out), HOST, str(server.port)]
    subprocess.run(argv, capture_output=True, timeout=120, check=True)
    assert out.read_bytes() == (tree / "many").read_bytes()


# -- on the wire --------------------------------------------------------------------------


def rrq(name: bytes, **options: int) -> bytes:
    fields = b"".join(b"%s\0%d\0" % (key.encode(), value) for key, value in options.items())
    return b"\0\x01" + name + b"\0octet\0" + fields


def ack(block: int) -> bytes:
    return struct.pack("!HH", 4, block)


def receive_all(sock: socket.socket, wait: float = 0.3) -> list[bytes]:
    """The datagrams that arrive until none has for WAIT seconds."""
    got = []
    sock.settimeout(wait)
    while True:
        try:
            got.append(sock.recv(65536))
        except TimeoutError:
            return got


def numbers(datagrams: list[bytes]) -> list[int]:
    assert all(datagram[:2] == b"\0\x03" for datagram in datagrams)
    return [struct.unpack("!H", datagram[2:4])[0] for datagram in datagrams]


def test_windows_on_the_wire_and_a_partial_ack(server: TftpServer, tree: Path) -> None:
    content = (tree / "vmlinuz").read_bytes()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.sendto(rrq(b"vmlinuz", blksize=1468, windowsize=8), (HOST, server.port))
        oack, peer = sock.recvfrom(65536)
        assert oack == b"\0\x06blksize\x001468\0windowsize\x008\0"
        sock.sendto(ack(0), peer)
        window = receive_all(sock)  # 8 datagrams, one block each, though sent in one go
        assert numbers(window) == list(range(1, 9))
        assert [len(datagram) for datagram in window] == [1472] * 8
        assert b"".join(datagram[4:] for datagram in window) == content[: 8 * 1468]
        sock.sendto(ack(5), peer)  # "6 was lost": the next window starts at 6
        assert numbers(receive_all(sock)) == list(range(6, 14))
        sock.sendto(ack(5), peer)  # a duplicate: no answer but the timer's
        sock.sendto(ack(13), peer)
        assert numbers(receive_all(sock)) == list(range(14, 22))
        sock.settimeout(3)
        start = time.monotonic()
        resent = [sock.recv(65536) for _ in range(8)]  # unacknowledged: again after ~1 s
        assert 0.5 < time.monotonic() - start < 2.5
        assert numbers(resent) == list(range(14, 22))


def test_the_window_is_bounded_whatever_is_asked(server: TftpServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.sendto(rrq(b"vmlinuz", blksize=1468, windowsize=65535), (HOST, server.port))
        oack, peer = sock.recvfrom(65536)
        assert oack == b"\0\x06blksize\x001468\0windowsize\x00%d\0" % MAX_WINDOWSIZE
        sock.sendto(ack(0), peer)
        assert numbers(receive_all(sock)) == list(range(1, MAX_WINDOWSIZE + 1))


def test_a_window_goes_one_by_one_where_the_kernel_refuses_gso(server: TftpServer) -> None:
    """A GSO send the kernel refuses (here: 8-byte segments, 64 at most, cannot carry the
    window) is sent one datagram at a time, and that transfer stops asking."""
    service = server._service
    assert service is not None
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        client.bind((HOST, 0))
        address = client.getsockname()
        slot = _Slot((address[0], address[1]), "test", 0.0)
        slot.gso = ([(socket.SOL_UDP, UDP_SEGMENT, (8).to_bytes(2, "little"))], 64)
        packets = [struct.pack("!HH", 3, block) + bytes(1468) for block in range(1, 5)]
        service._send_window(slot, sock, packets)
        assert receive_all(client) == packets
        assert slot.gso is None
