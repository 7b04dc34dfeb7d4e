"""The read-only TFTP server on loopback, against tftpy's client and a raw UDP client."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tftpy

from pxe_server.tftp import TftpServer

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
CONFIG = "pxelinux.cfg/01-52-54-00-12-34-56"
CONFIG_TEXT = b"DEFAULT install\nLABEL install\n  KERNEL vmlinuz\n"
SECRET = b"top secret, outside the root\n"


class Resolver:
    """A resolve() callback: one rendered config, and a record of who asked for what."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, int]]] = []
        self.lock = threading.Lock()

    def __call__(self, path: str, client: tuple[str, int]) -> bytes | None:
        with self.lock:
            self.calls.append((path, client))
        return CONFIG_TEXT if path == CONFIG else None


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "netboot"
    (root / "boot").mkdir(parents=True)
    (root / "pxelinux.0").write_bytes(os.urandom(42_000))
    (root / "boot" / "initrd.img").write_bytes(os.urandom(1024 * 1024))
    (root / "empty").write_bytes(b"")
    (root / "exact").write_bytes(os.urandom(512 * 3))  # ends on a block boundary
    (tmp_path / "secret").write_bytes(SECRET)
    (root / "leak").symlink_to(tmp_path / "secret")
    (root / "up").symlink_to(tmp_path)
    return root


@pytest.fixture
def resolver() -> Resolver:
    return Resolver()


@pytest.fixture
def server(tree: Path, resolver: Resolver) -> Iterator[TftpServer]:
    srv = TftpServer(tree, resolver, host=HOST, port=0)
    srv.start()
    yield srv
    srv.stop()


def fetch(server: TftpServer, name: str, **options: int) -> bytes:
    out = io.BytesIO()
    client = tftpy.TftpClient(HOST, server.port, options=dict(options))
    client.download(name, out, timeout=5)
    return out.getvalue()


def raw_exchange(port: int, packet: bytes) -> tuple[bytes, tuple[str, int]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(packet, (HOST, port))
        return sock.recvfrom(65536)


def rrq(name: bytes, *options: bytes) -> bytes:
    return b"\0\x01" + name + b"\0octet\0" + b"".join(o + b"\0" for o in options)


def as_error(reply: bytes) -> tuple[int, bytes]:
    opcode, code = struct.unpack("!HH", reply[:4])
    assert opcode == 5, f"expected an ERROR packet, got {reply[:40]!r}"
    return code, reply[4:].rstrip(b"\0")


def raw_get(port: int, packet: bytes) -> tuple[bytes, dict[str, str], tuple[str, int]]:
    """A minimal RRQ client: (data, OACK options, our address as the server saw it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind((HOST, 0))
        sock.sendto(packet, (HOST, port))
        data, options, blksize, expected = b"", {}, 512, 1
        while True:
            reply, peer = sock.recvfrom(65536)
            opcode = struct.unpack("!H", reply[:2])[0]
            if opcode == 6:
                items = reply[2:].split(b"\0")[:-1]
                options = {
                    k.decode(): v.decode() for k, v in zip(items[0::2], items[1::2], strict=True)
                }
                blksize = int(options.get("blksize", 512))
                sock.sendto(struct.pack("!HH", 4, 0), peer)
                continue
            assert opcode == 3, as_error(reply)
            block = struct.unpack("!H", reply[2:4])[0]
            assert block == expected
            data += reply[4:]
            sock.sendto(struct.pack("!HH", 4, block), peer)
            expected += 1
            if len(reply) - 4 < blksize:
                return data, options, sock.getsockname()


def test_file_from_root_is_byte_exact(server: TftpServer, tree: Path) -> None:
    assert fetch(server, "pxelinux.0") == (tree / "pxelinux.0").read_bytes()
    assert fetch(server, "/boot/initrd.img") == (tree / "boot" / "initrd.img").read_bytes()
    assert fetch(server, "empty") == b""
    assert fetch(server, "exact") == (tree / "exact").read_bytes()


def test_blksize_and_tsize_are_negotiated(server: TftpServer, tree: Path) -> None:
    initrd = (tree / "boot" / "initrd.img").read_bytes()
    assert fetch(server, "boot/initrd.img", blksize=1468, tsize=0) == initrd
    data, options, _ = raw_get(
        server.port, rrq(b"boot/initrd.img", b"blksize", b"1468", b"tsize", b"0")
    )
    assert data == initrd
    assert options == {"blksize": "1468", "tsize": str(len(initrd))}
    data, options, _ = raw_get(
        server.port, rrq(b"pxelinux.0", b"blksize", b"99999", b"timeout", b"2")
    )
    assert data == (tree / "pxelinux.0").read_bytes()
    assert options == {"blksize": "65464", "timeout": "2"}


def test_resolved_config_is_served_and_the_client_is_reported(
    server: TftpServer, resolver: Resolver, tree: Path
) -> None:
    (tree / "pxelinux.cfg").mkdir()
    (tree / CONFIG).write_bytes(b"stale file on disk")  # resolve() comes first
    assert fetch(server, "/" + CONFIG) == CONFIG_TEXT
    data, options, ours = raw_get(server.port, rrq(CONFIG.encode(), b"tsize", b"0"))
    assert data == CONFIG_TEXT
    assert options == {"tsize": str(len(CONFIG_TEXT))}
    assert (CONFIG, ours) in resolver.calls
    assert all(path == CONFIG and client[0] == HOST for path, client in resolver.calls)


def test_write_requests_are_refused_and_nothing_is_written(
    server: TftpServer, tree: Path, tmp_path: Path
) -> None:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for name in (b"upload.bin", b"pxelinux.0", b"new/dir/file", b"../outside"):
        code, message = as_error(raw_exchange(server.port, b"\0\x02" + name + b"\0octet\0")[0])
        assert (code, message) == (2, b"read-only server")
    source = tmp_path / "payload"
    source.write_bytes(b"x" * 5000)
    with pytest.raises(tftpy.TftpException):
        tftpy.TftpClient(HOST, server.port).upload("upload.bin", str(source), timeout=2)
    source.unlink()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tree / "pxelinux.0").stat().st_size == 42_000


@pytest.mark.parametrize(
    ("packet", "code"),
    [
        (rrq(b"../../etc/passwd"), 2),
        (rrq(b"boot/../../secret"), 2),
        (rrq(b"/etc/passwd"), 1),  # means <root>/etc/passwd
        (rrq(b"leak"), 2),  # a symlink inside the root pointing outside
        (rrq(b"up/secret"), 2),
        (rrq(b"a\\..\\secret"), 2),
        (b"\0\x01a\0b\0octet\0", 4),  # the NUL ends the name: mode "b" is refused
        (rrq(b"missing"), 1),
        (rrq(b"boot"), 1),
        (rrq(b"\xff\xfe"), 2),
        (b"\0\x04\0\x01", 4),  # an ACK out of nowhere
    ],
)
def test_escapes_and_bad_requests_get_error_packets(
    server: TftpServer, packet: bytes, code: int
) -> None:
    reply, peer = raw_exchange(server.port, packet)
    assert as_error(reply)[0] == code
    assert SECRET not in reply
    assert b"root:" not in reply
    assert peer[1] != server.port  # answered from a fresh transfer ID


def test_unacknowledged_packets_are_resent_and_strangers_refused(server: TftpServer) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
    ):
        sock.settimeout(5)
        stranger.settimeout(5)
        sock.sendto(rrq(b"pxelinux.0", b"timeout", b"1"), (HOST, server.port))
        oack, peer = sock.recvfrom(65536)
        assert oack == b"\0\x06timeout\x001\0"
        stranger.sendto(struct.pack("!HH", 4, 0), peer)
        assert as_error(stranger.recvfrom(65536)[0])[0] == 5
        start = time.monotonic()
        assert sock.recvfrom(65536) == (oack, peer)  # never ACKed: sent again after ~1 s
        assert 0.5 < time.monotonic() - start < 3
        sock.sendto(struct.pack("!HH", 4, 0), peer)
        assert sock.recvfrom(65536)[0][:4] == b"\0\x03\0\x01"  # the stranger changed nothing


def test_file_not_found_reaches_tftpy_client(server: TftpServer) -> None:
    with pytest.raises(tftpy.TftpFileNotFoundError):
        fetch(server, "missing")


def test_fifty_concurrent_clients(server: TftpServer, tree: Path) -> None:
    small = hashlib.sha256((tree / "pxelinux.0").read_bytes()).hexdigest()
    large = hashlib.sha256((tree / "boot" / "initrd.img").read_bytes()).hexdigest()

    def client(index: int) -> tuple[str, str, int]:
        boot = fetch(server, "pxelinux.0")
        initrd = fetch(server, "boot/initrd.img", blksize=1468, tsize=0)
        return (
            hashlib.sha256(boot).hexdigest(),
            hashlib.sha256(initrd).hexdigest(),
            len(boot) + len(initrd),
        )

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(client, range(50)))
    seconds = time.monotonic() - start
    assert all(result[:2] == (small, large) for result in results)
    total = sum(result[2] for result in results)
    print(
        f"\n50 clients: {total / 1e6:.1f} MB in {seconds:.2f} s = {total / 1e6 / seconds:.1f} MB/s"
    )
    assert seconds < 60


def test_stop_releases_the_port(tree: Path, resolver: Resolver) -> None:
    srv = TftpServer(tree, resolver, host=HOST, port=0)
    srv.start()
    port = srv.port
    assert port != 0
    assert fetch(srv, "pxelinux.0") == (tree / "pxelinux.0").read_bytes()
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))
    srv.stop()  # a second stop is harmless


def test_stop_drops_a_running_transfer(tree: Path, resolver: Resolver) -> None:
    srv = TftpServer(tree, resolver, host=HOST, port=0)
    srv.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(rrq(b"boot/initrd.img"), (HOST, srv.port))
        assert sock.recvfrom(65536)[0][:4] == b"\0\x03\0\x01"  # block 1, never ACKed
        start = time.monotonic()
        srv.stop()
        assert time.monotonic() - start < 2
    assert not any(t.name == "netinstall-tftp" for t in threading.enumerate())
    assert os.path.exists(tree / "boot" / "initrd.img")
