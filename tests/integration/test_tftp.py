"""The read-only TFTP server on loopback, against curl (a real client) and a raw UDP client."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pxe_server.tftp import (
    DEFAULT_TIMEOUT,
    LATER,
    MAX_PER_ADDRESS,
    MAX_RETRIES,
    MAX_TIMEOUT,
    MAX_TRANSFERS,
    Later,
    Limits,
    TftpServer,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl (the TFTP client) is missing"),
]

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


class CurlFailed(Exception):
    def __init__(self, code: int, stderr: str) -> None:
        super().__init__(f"curl exit {code}: {stderr}")
        self.code = code


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    argv = ["curl", "-sS", "--max-time", "30", *args]
    return subprocess.run(argv, capture_output=True, timeout=40, check=False)


def fetch(server: TftpServer, name: str, blksize: int = 512, source: str = HOST) -> bytes:
    """NAME as curl (a real TFTP client: it asks tsize, blksize and timeout) gets it, from
    the address SOURCE."""
    url = f"tftp://{HOST}:{server.port}/{name}"
    done = curl("--interface", source, "--tftp-blksize", str(blksize), url)
    if done.returncode != 0:
        raise CurlFailed(done.returncode, done.stderr.decode(errors="replace"))
    return done.stdout


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
    assert fetch(server, "boot/initrd.img", blksize=1468) == initrd
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
    uploaded = curl("-T", str(source), f"tftp://{HOST}:{server.port}/upload.bin")
    assert uploaded.returncode != 0
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


def test_file_not_found_reaches_a_real_client(server: TftpServer) -> None:
    with pytest.raises(CurlFailed) as failed:
        fetch(server, "missing")
    assert failed.value.code == 68  # curl: "TFTP: File Not Found"


def test_fifty_concurrent_clients(server: TftpServer, tree: Path) -> None:
    small = hashlib.sha256((tree / "pxelinux.0").read_bytes()).hexdigest()
    large = hashlib.sha256((tree / "boot" / "initrd.img").read_bytes()).hexdigest()

    def client(index: int) -> tuple[str, str, int]:
        address = f"127.0.1.{index + 1}"  # fifty hosts
        boot = fetch(server, "pxelinux.0", source=address)
        initrd = fetch(server, "boot/initrd.img", blksize=1468, source=address)
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


# -- keyed transfers and the server's limits -----------------------------------------------


def bound_socket(address: str = HOST) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    sock.settimeout(5)
    return sock


def silent_for(
    sock: socket.socket, seconds: float, expect: tuple[bytes, tuple[str, int]] | None = None
) -> bool:
    """Whether SOCK receives nothing for SECONDS (if it does, that is EXPECT when given)."""
    sock.settimeout(seconds)
    try:
        received = sock.recvfrom(65536)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)
    assert expect is None or received == expect
    return False


def test_a_repeated_request_never_starts_a_second_transfer(server: TftpServer, tree: Path) -> None:
    initrd = (tree / "boot" / "initrd.img").read_bytes()
    boot = (tree / "pxelinux.0").read_bytes()
    with bound_socket() as sock, bound_socket() as other:
        sock.sendto(rrq(b"boot/initrd.img"), (HOST, server.port))
        other.sendto(rrq(b"pxelinux.0"), (HOST, server.port))
        first, peer = sock.recvfrom(65536)
        assert first == b"\0\x03\0\x01" + initrd[:512]
        for _ in range(3):  # the same (address, port) asks again, for this file or another
            sock.sendto(rrq(b"boot/initrd.img"), (HOST, server.port))
            sock.sendto(rrq(b"pxelinux.0"), (HOST, server.port))
        assert silent_for(sock, 0.5)  # no second OACK/DATA stream, and nothing of pxelinux.0
        assert server.transfers == 2
        sock.sendto(struct.pack("!HH", 4, 1), peer)
        assert sock.recvfrom(65536) == (b"\0\x03\0\x02" + initrd[512:1024], peer)
        other_first, other_peer = other.recvfrom(65536)
        assert other_first == b"\0\x03\0\x01" + boot[:512]
        assert other_peer != peer  # a socket (TID) of its own


def test_the_clients_timeout_is_bounded_and_abandoned_transfers_reclaimed(
    server: TftpServer,
) -> None:
    with bound_socket() as sock:
        sock.sendto(
            rrq(b"pxelinux.0", b"timeout", b"255", b"blksize", b"1024"), (HOST, server.port)
        )
        start = time.monotonic()
        oack, peer = sock.recvfrom(65536)
        assert oack == b"\0\x06blksize\x001024\0"  # 255 s is not acknowledged: ours is used
        sends = [time.monotonic() - start]
        while not silent_for(sock, DEFAULT_TIMEOUT + 1, expect=(oack, peer)):
            sends.append(time.monotonic() - start)
        assert len(sends) == 1 + MAX_RETRIES
        gaps = [later - earlier for earlier, later in itertools.pairwise(sends)]
        assert all(DEFAULT_TIMEOUT - 0.2 < gap < DEFAULT_TIMEOUT + 0.5 for gap in gaps), gaps
        assert server.transfers == 0
        sock.sendto(struct.pack("!HH", 4, 0), peer)  # too late: the transfer's socket is gone
        assert silent_for(sock, 0.3)


def test_one_address_gets_its_share_and_no_more(server: TftpServer, tree: Path) -> None:
    socks = [bound_socket("127.0.2.1") for _ in range(MAX_PER_ADDRESS + 1)]
    try:
        for sock in socks[:MAX_PER_ADDRESS]:
            sock.sendto(rrq(b"pxelinux.0"), (HOST, server.port))
            assert sock.recvfrom(65536)[0][:4] == b"\0\x03\0\x01"
        extra = socks[MAX_PER_ADDRESS]
        extra.sendto(rrq(b"pxelinux.0"), (HOST, server.port))
        reply, _ = extra.recvfrom(65536)  # all eight busy, none has missed an ACK yet
        assert as_error(reply) == (0, b"too many transfers from your address")
        assert server.transfers == MAX_PER_ADDRESS
        assert fetch(server, "pxelinux.0", source="127.0.2.2") == (tree / "pxelinux.0").read_bytes()
        time.sleep(DEFAULT_TIMEOUT + 0.3)  # now the first has missed one: it gives way
        extra.sendto(rrq(b"pxelinux.0"), (HOST, server.port))
        assert extra.recvfrom(65536)[0][:4] == b"\0\x03\0\x01"
        evicted = [s for s in socks[:MAX_PER_ADDRESS] if b"server busy" in drain_all(s)]
        assert len(evicted) == 1
        assert server.transfers == MAX_PER_ADDRESS
    finally:
        for sock in socks:
            sock.close()


def test_an_address_gets_its_share_again_however_its_transfers_ended(
    server: TftpServer, tree: Path
) -> None:
    """The count of an address's transfers (the cap's bookkeeping) goes down on every end."""
    address = "127.0.2.9"
    for _ in range(MAX_PER_ADDRESS):
        assert fetch(server, "pxelinux.0", source=address) == (tree / "pxelinux.0").read_bytes()
        with pytest.raises(CurlFailed):  # admitted, then refused by the opener
            fetch(server, "missing", source=address)
        with bound_socket(address) as sock:  # cancelled by the client
            sock.sendto(rrq(b"pxelinux.0"), (HOST, server.port))
            peer = sock.recvfrom(65536)[1]
            sock.sendto(b"\0\x05\0\0cancelled\0", peer)
    deadline = time.monotonic() + 5
    while server.transfers and time.monotonic() < deadline:
        time.sleep(0.01)
    socks = [bound_socket(address) for _ in range(MAX_PER_ADDRESS)]
    try:
        for sock in socks:
            sock.sendto(rrq(b"pxelinux.0"), (HOST, server.port))
            assert sock.recvfrom(65536)[0][:4] == b"\0\x03\0\x01"  # its whole share again
    finally:
        for sock in socks:
            sock.close()


def drain_all(sock: socket.socket) -> bytes:
    """What SOCK has received so far (loopback delivers as it sends)."""
    received = b""
    sock.setblocking(False)
    try:
        while True:
            received += sock.recv(65536)
    except BlockingIOError:
        return received
    finally:
        sock.settimeout(5)


@pytest.fixture
def patient_server(tree: Path, resolver: Resolver) -> Iterator[TftpServer]:
    """A server whose transfers miss an ACK only after MAX_TIMEOUT: time to fill it."""
    srv = TftpServer(tree, resolver, host=HOST, port=0, limits=Limits(timeout=MAX_TIMEOUT))
    srv.start()
    yield srv
    srv.stop()


def test_a_full_server_gives_up_no_transfer_that_has_not_missed_an_ack(
    patient_server: TftpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """At MAX_TRANSFERS a new request evicts only a transfer whose timer fired; until one
    has, it is left unanswered, and its client's resent request is then served."""
    caplog.set_level(logging.INFO, logger="netinstall.tftp")
    socks = [bound_socket(f"127.0.{3 + i // 250}.{i % 250 + 1}") for i in range(MAX_TRANSFERS)]
    newcomer = bound_socket("127.0.9.9")
    server = patient_server
    with contextlib.ExitStack() as stack:
        for sock in [*socks, newcomer]:
            stack.callback(sock.close)
        for sock in socks:
            sock.sendto(rrq(b"pxelinux.0"), (HOST, server.port))
        for sock in socks:
            assert sock.recvfrom(65536)[0][:4] == b"\0\x03\0\x01"
        assert server.transfers == MAX_TRANSFERS
        # every one waits for its first ACK, none has missed one: none is given up, and
        # the requests left unanswered over several ticks make one log line a second
        for _ in range(3):
            newcomer.sendto(rrq(b"boot/initrd.img"), (HOST, server.port))
            assert silent_for(newcomer, 0.2)
        assert not [i for i, s in enumerate(socks) if b"server busy" in drain_all(s)]
        assert server.transfers == MAX_TRANSFERS
        assert len(unanswered(caplog)) == 1
        # the first asked misses its ACK first (its block is sent again): the newcomer's
        # request, resent as a PXE ROM does, takes its place
        assert socks[0].recvfrom(65536)[0][:4] == b"\0\x03\0\x01"
        time.sleep(0.3)  # the next tick has seen it
        newcomer.sendto(rrq(b"boot/initrd.img"), (HOST, server.port))
        first = newcomer.recvfrom(65536)[0]
        assert first[:4] == b"\0\x03\0\x01"
        evicted = [i for i, s in enumerate(socks) if b"server busy" in drain_all(s)]
        assert evicted == [0]
        assert server.transfers == MAX_TRANSFERS
        deadline = time.monotonic() + 3  # the rest is counted a second after the first line
        while sum(unanswered(caplog)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sum(unanswered(caplog)) == 3


def unanswered(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The counts of the server's "requests left unanswered" lines so far."""
    found = (re.search(r"(\d+) requests left unanswered", r.getMessage()) for r in caplog.records)
    return [int(match[1]) for match in found if match]


def test_a_full_server_evicts_an_abandoned_transfer_for_a_new_client(
    server: TftpServer, tree: Path
) -> None:
    socks = [bound_socket(f"127.0.{3 + i // 250}.{i % 250 + 1}") for i in range(MAX_TRANSFERS)]
    try:
        for sock in socks:
            sock.sendto(rrq(b"pxelinux.0"), (HOST, server.port))
        for sock in socks:
            assert sock.recvfrom(65536)[0][:4] == b"\0\x03\0\x01"
        assert server.transfers == MAX_TRANSFERS
        time.sleep(DEFAULT_TIMEOUT + 0.3)  # none ACKs: every one has missed an ACK
        # A new client is served in full; each of its requests evicts one of the oldest.
        assert (
            fetch(server, "boot/initrd.img", source="127.0.9.9")
            == (tree / "boot" / "initrd.img").read_bytes()
        )
        evicted = [i for i, s in enumerate(socks) if b"server busy" in drain_all(s)]
        assert len(evicted) == 1
        assert server.transfers == MAX_TRANSFERS - 1
    finally:
        for sock in socks:
            sock.close()


def lockstep_get(sock: socket.socket, port: int, name: bytes) -> tuple[bytes, tuple[str, int]]:
    """NAME fetched from SOCK without options: the data and the server's TID."""
    sock.sendto(rrq(name), (HOST, port))
    data = b""
    while True:
        reply, peer = sock.recvfrom(65536)
        assert reply[:2] == b"\0\x03", reply[:40]
        data += reply[4:]
        sock.sendto(b"\0\x04" + reply[2:4], peer)
        if len(reply) < 4 + 512:
            return data, peer


def test_transfer_sockets_serve_again_but_never_the_same_client_twice_in_a_row(
    server: TftpServer, tree: Path
) -> None:
    content = (tree / "pxelinux.0").read_bytes()
    with bound_socket() as one, bound_socket() as other:
        data, first = lockstep_get(one, server.port, b"pxelinux.0")
        assert data == content
        # the same address and port again: not the socket it was just served from, so a
        # late ACK of the first transfer cannot pass for one of this one
        data, second = lockstep_get(one, server.port, b"pxelinux.0")
        assert data == content
        assert second != first
        data, third = lockstep_get(other, server.port, b"pxelinux.0")  # another client
        assert data == content
        assert third == first  # the socket idle longest, kept: no new socket made


def test_idle_transfer_sockets_are_bounded(tree: Path, resolver: Resolver) -> None:
    spare = 2
    server = TftpServer(tree, resolver, host=HOST, port=0, limits=Limits(spare_sockets=spare))
    server.start()
    socks = [bound_socket(f"127.0.4.{i + 1}") for i in range(6)]
    try:
        fetch(server, "pxelinux.0")  # one transfer socket exists (and curl's is closed)
        before = len(os.listdir("/proc/self/fd"))
        peers = []
        for sock in socks:
            sock.sendto(rrq(b"pxelinux.0"), (HOST, server.port))
            peers.append(sock.recvfrom(65536)[1])
        assert len(set(peers)) == len(socks)  # a socket each at once
        for sock, peer in zip(socks, peers, strict=True):
            sock.sendto(b"\0\x05\0\0cancelled\0", peer)
        deadline = time.monotonic() + 5
        while server.transfers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.transfers == 0
        # ours plus the server's: six made at most, all but SPARE closed again
        after = len(os.listdir("/proc/self/fd"))
        assert after - before == spare - 1
    finally:
        server.stop()
        for sock in socks:
            sock.close()


def test_symlink_loops_and_fifos_get_an_error_at_once_and_leak_nothing(
    server: TftpServer, tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="netinstall.tftp")
    (tree / "loop-a").symlink_to("loop-b")
    (tree / "loop-b").symlink_to("loop-a")
    (tree / "boot" / "grubx64.efi").symlink_to("grubx64.efi")
    os.mkfifo(tree / "fifo")
    names = [b"loop-a", b"loop-b/pxelinux.0", b"boot/grubx64.efi", b"fifo"]
    expected = {b"loop-a": 2, b"loop-b/pxelinux.0": 2, b"boot/grubx64.efi": 2, b"fifo": 1}
    fetch(server, "pxelinux.0")  # the server's lazily made descriptors exist before counting
    before = len(os.listdir("/proc/self/fd"))
    start = time.monotonic()
    for _ in range(50):
        for name in names:
            reply, _ = raw_exchange(server.port, rrq(name))
            assert as_error(reply)[0] == expected[name]
    assert time.monotonic() - start < 10
    # 200 refused requests: a descriptor kept per request would show 200 more; the
    # process's own (a lazily made loop or executor descriptor, another test's socket
    # still closing) may move the count by one or two.
    assert len(os.listdir("/proc/self/fd")) - before < 10
    assert server.transfers == 0
    lines = [r.getMessage() for r in caplog.records if "loop-a:" in r.getMessage()]
    assert len(lines) == 50
    assert lines[0].endswith("loop-a: refused (cannot read it: Too many levels of symbolic links)")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert fetch(server, "pxelinux.0") == (tree / "pxelinux.0").read_bytes()


def test_stop_while_files_are_being_opened_leaks_nothing(tree: Path) -> None:
    gate = threading.Event()

    def slow(path: str, client: tuple[str, int]) -> bytes | None:
        gate.wait(5)  # a registry that takes its time
        return None

    before = len(os.listdir("/proc/self/fd"))
    srv = TftpServer(tree, slow, host=HOST, port=0)
    srv.start()
    socks = [bound_socket(f"127.0.4.{i + 1}") for i in range(5)]
    for sock in socks:
        sock.sendto(rrq(b"pxelinux.0"), (HOST, srv.port))
    time.sleep(0.2)
    assert srv.transfers == 5
    threading.Timer(0.3, gate.set).start()
    srv.stop()
    for sock in socks:
        sock.close()
    assert len(os.listdir("/proc/self/fd")) <= before
    assert not [t for t in threading.enumerate() if t.name.startswith("netinstall-tftp")]


# -- resolve_now: answered on the loop's thread, without the opener ----------------------


class ResolveNow:
    """A resolve_now callback: CONFIG at once, "no dynamic file" for pxelinux.0, LATER for
    the rest; it records the thread that asked."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def __call__(self, path: str, client: tuple[str, int]) -> bytes | Later | None:
        self.threads.append(threading.current_thread().name)
        if path == "boom":
            raise RuntimeError("a bug in resolve_now")
        if path == CONFIG:
            return b"from resolve_now\n"
        return None if path == "pxelinux.0" else LATER


@pytest.fixture
def quick_server(tree: Path, resolver: Resolver) -> Iterator[tuple[TftpServer, ResolveNow]]:
    now = ResolveNow()
    srv = TftpServer(tree, resolver, host=HOST, port=0, resolve_now=now)
    srv.start()
    yield srv, now
    srv.stop()


def test_resolve_now_answers_on_the_loop_and_resolve_is_not_asked(
    quick_server: tuple[TftpServer, ResolveNow], resolver: Resolver, tree: Path
) -> None:
    server, now = quick_server
    assert fetch(server, CONFIG) == b"from resolve_now\n"
    assert now.threads == ["netinstall-tftp"]  # the loop's own thread
    assert fetch(server, "pxelinux.0") == (tree / "pxelinux.0").read_bytes()  # None: the tree
    assert resolver.calls == []  # neither went to the opener's resolve()
    assert fetch(server, "boot/initrd.img") == (tree / "boot/initrd.img").read_bytes()
    assert [path for path, _ in resolver.calls] == ["boot/initrd.img"]  # LATER: resolve()
    assert server.transfers == 0


def test_resolve_now_failing_costs_its_request_only(
    quick_server: tuple[TftpServer, ResolveNow], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = quick_server
    reply, _ = raw_exchange(server.port, rrq(b"boom"))
    assert as_error(reply) == (0, b"server error")
    assert "resolve_now failed for boom" in caplog.text
    assert fetch(server, CONFIG) == b"from resolve_now\n"
    deadline = time.monotonic() + 5  # curl may exit before the server reads its last ACK
    while server.transfers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.transfers == 0
