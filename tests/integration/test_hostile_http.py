"""The HTTP server on a hostile network: a real ``netinstall server run`` process on
loopback, and what its clients may cost it (pxe_server/limits.py; README, "Limits").

* six concurrent 63 MiB log-bundle uploads stay far below 150 MiB of peak RSS (VmHWM);
* a client that disconnects mid-body leaves no partial file and one log line;
* 200 slowloris connections are closed within the header timeout, a trickling body is
  dropped, an idle keep-alive connection is closed, and real clients are served meanwhile;
* 2,200 boot-config requests from unknown MACs make at most the limit of hosts;
* nothing of it puts a traceback in the server's log.
"""

from __future__ import annotations

import os
import re
import selectors
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from pxe_server.limits import (
    BODY_GRACE,
    HEADER_TIMEOUT,
    LINGER,
    MAX_LOG_BUNDLE,
    UNKNOWN_LIMIT,
    UNKNOWN_RATE,
)
from pxe_server.registry import Registry
from tests.integration.conftest import NETINSTALL, netinstall

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
UPLOAD = 63 * MIB
RSS_GOAL = 150 * MIB
UPLOADERS = 6


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    directory: Path
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text("utf-8", errors="replace")

    def peak_rss(self) -> int:
        """VmHWM: the most resident memory the server process ever had, in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
        assert found, status
        return int(found[1]) * 1024

    def token(self, mac: str) -> str:
        """The key an installer of ``mac`` enrolled with its install token (enrolled now,
        or again: the same key each time)."""
        key = f"hostile-http-key-{mac.replace(':', '')}-0123456789ab"
        with Registry.open(self.directory) as registry:
            host = registry.get_host(mac)
            assert host is not None
            assert host.token is not None
            registry.enrol(mac, host.token, key, "127.0.0.1")
        return key


Start = Callable[..., Running]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """``start(*hosts, policy=..., extra=...)``: a server directory with ``hosts``, served
    by ``netinstall server run`` on an ephemeral loopback port until the test ends."""
    running: list[Running] = []

    def start(*hosts: str, policy: str = "local", extra: tuple[str, ...] = ()) -> Running:
        directory = tmp_path / f"server{len(running)}"
        done = netinstall("server", "init", str(directory), "--unknown-policy", policy)
        assert done.returncode == 0, done.stderr
        for mac in hosts:
            done = netinstall("host", "add", mac, "--dir", str(directory))
            assert done.returncode == 0, done.stderr
        log = directory / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(NETINSTALL), "server", "run", str(directory), "--bind", "127.0.0.1",
                 "--http-port", "0", "--tftp-port", "0", *extra],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        server = Running(process, directory, 0, log)
        running.append(server)
        deadline = time.monotonic() + 60
        while not (found := re.search(r"http serving on 127\.0\.0\.1:(\d+)", server.text())):
            assert process.poll() is None, server.text()
            assert time.monotonic() < deadline, server.text()
            time.sleep(0.1)
        server.port = int(found[1])
        return server

    yield start
    for server in running:
        server.process.terminate()
        server.process.wait(timeout=30)
        assert "Traceback" not in server.text(), server.text()
        assert "internal error" not in server.text()


def macs(count: int, prefix: str = "52:54:01") -> list[str]:
    return [
        f"{prefix}:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}" for i in range(count)
    ]


# -- log bundles ----------------------------------------------------------------------------


def test_six_concurrent_63_mib_uploads_keep_the_server_small(start: Start, tmp_path: Path) -> None:
    hosts = macs(UPLOADERS)
    server = start(*hosts)
    bundle = tmp_path / "bundle.tar.bz2"
    with bundle.open("wb") as out:
        for _ in range(UPLOAD // MIB):
            out.write(os.urandom(MIB))
    before = server.peak_rss()

    def upload(mac: str) -> requests.Response:
        with bundle.open("rb") as body:  # streamed by requests, with its Content-Length
            return requests.put(
                f"{server.base}/api/v1/hosts/{mac}/logs",
                data=body,
                headers={"Authorization": f"Bearer {server.token(mac)}"},
                timeout=300,
            )

    began = time.monotonic()
    with ThreadPoolExecutor(UPLOADERS) as pool:
        replies = list(pool.map(upload, hosts))
    took = time.monotonic() - began
    peak = server.peak_rss()
    print(
        f"\n{UPLOADERS} concurrent uploads of {UPLOAD // MIB} MiB in {took:.1f} s: server peak "
        f"RSS (VmHWM) {peak / MIB:.1f} MiB (before them {before / MIB:.1f} MiB; goal "
        f"{RSS_GOAL // MIB} MiB)"
    )
    assert [r.status_code for r in replies] == [201] * UPLOADERS, [r.text for r in replies]
    assert peak <= RSS_GOAL
    logs = server.directory / "logs"
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    for mac, reply in zip(hosts, replies, strict=True):
        stored = server.directory / reply.json()["stored"]
        assert stored.parent.name == mac.replace(":", "-")
        assert stored.stat().st_size == UPLOAD
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
        assert [p.name for p in stored.parent.iterdir()] == [stored.name]
    assert stored.read_bytes() == bundle.read_bytes()


def raw(server: Running, head: str, body: bytes = b"") -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    conn.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return conn


def test_a_client_gone_mid_body_leaves_no_file_and_one_line(start: Start) -> None:
    mac = "52:54:00:12:34:56"
    server = start(mac)
    head = (
        f"PUT /api/v1/hosts/{mac}/logs HTTP/1.1\nHost: x\nAuthorization: Bearer "
        f"{server.token(mac)}\nContent-Length: {20 * MIB}\n"
    )
    for _ in range(3):
        conn = raw(server, head, os.urandom(3 * MIB))
        time.sleep(0.5)
        conn.close()
    directory = server.directory / "logs" / mac.replace(":", "-")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        server.text().count("client went away") < 3 or list(directory.iterdir())
    ):
        time.sleep(0.1)
    assert list(directory.iterdir()) == []  # no partial file
    gone = [line for line in server.text().splitlines() if "client went away" in line]
    assert len(gone) == 3, server.text()  # one line each
    assert "Traceback" not in server.text()
    # a bundle over the cap announced up front is refused before a byte is stored
    conn = raw(server, head.replace(f"{20 * MIB}", f"{MAX_LOG_BUNDLE + 1}"))
    assert conn.recv(4096).split(b" ", 2)[1] == b"413"
    conn.close()


# -- slow clients -----------------------------------------------------------------------------


def closed_after(
    conns: list[socket.socket], drip: bytes, every: float, limit: float
) -> list[float]:
    """Send ``drip`` on each connection every ``every`` s until the server closes it; the
    seconds each lasted (``limit`` + 1 for one still open after ``limit`` s)."""
    began = time.monotonic()
    lasted: dict[socket.socket, float] = {}
    selector = selectors.DefaultSelector()
    for conn in conns:
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ)
    next_drip = began
    while len(lasted) < len(conns) and time.monotonic() - began < limit:
        if drip and time.monotonic() >= next_drip:
            for conn in conns:
                if conn not in lasted:
                    try:
                        conn.send(drip)
                    except OSError:
                        lasted[conn] = time.monotonic() - began
                        selector.unregister(conn)
            next_drip += every
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                lasted[sock] = time.monotonic() - began
                selector.unregister(sock)
    for conn in conns:
        conn.close()
    return [lasted.get(conn, limit + 1) for conn in conns]


def test_slowloris_connections_are_closed_within_the_header_timeout(start: Start) -> None:
    server = start("52:54:00:12:34:56")
    conns = [raw(server, "GET /api/v1/openapi.json HTTP/1.1\nHost: x") for _ in range(200)]
    # ... "\r\n" was sent: each now sends one more header byte every 2 s, forever.
    served: list[float] = []

    def real_client() -> None:
        time.sleep(2)
        began = time.monotonic()
        reply = requests.get(f"{server.base}/api/v1/openapi.json", timeout=10)
        assert reply.status_code == 200
        served.append(time.monotonic() - began)

    helper = threading.Thread(target=real_client)
    helper.start()
    lasted = closed_after(conns, b"X", every=2.0, limit=HEADER_TIMEOUT + 10)
    helper.join()
    print(
        f"\n200 slowloris connections closed after {min(lasted):.1f}-{max(lasted):.1f} s "
        f"(header timeout {HEADER_TIMEOUT:g} s); a real client meanwhile: {served[0]:.2f} s"
    )
    assert max(lasted) <= HEADER_TIMEOUT + 3
    assert served
    assert served[0] < 2

    # An idle keep-alive connection is closed as soon (keep-alive bounded).
    conn = raw(server, "GET /api/v1/openapi.json HTTP/1.1\nHost: x\n")
    assert closed_after([conn], b"", every=1e9, limit=HEADER_TIMEOUT + 10)[0] <= HEADER_TIMEOUT + 3


def test_a_trickling_body_is_dropped(start: Start) -> None:
    mac = "52:54:00:12:34:56"
    server = start(mac)
    head = (
        f"POST /api/v1/hosts/{mac}/events HTTP/1.1\nHost: x\nAuthorization: Bearer "
        f"{server.token(mac)}\nContent-Type: application/json\nContent-Length: 4000\n"
    )
    conn = raw(server, head, b'{"state": "installing", "message": "')
    conn.setblocking(False)
    began, reply = time.monotonic(), b""
    while time.monotonic() - began < BODY_GRACE + 10:
        try:
            conn.send(b"x")  # one byte a second: well below the minimum rate
        except OSError:
            break
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            time.sleep(1.0)
            continue
        except OSError:
            break
        if not data:
            break
        reply += data
    lasted = time.monotonic() - began
    conn.close()
    print(f"\na body trickling one byte a second was dropped after {lasted:.1f} s")
    assert reply.split(b" ", 2)[1] == b"408", reply
    assert b"came too slowly" in reply
    assert lasted <= BODY_GRACE + LINGER + 3
    with Registry.open(server.directory) as registry:
        assert registry.get_host(mac).state.value == "pending"  # type: ignore[union-attr]


# -- unknown MACs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ("--unknown-limit", "50", "--unknown-rate", "1000000"),  # the count limit
        (),  # the defaults: the rate's burst comes first
    ],
)
def test_2200_unknown_macs_make_at_most_the_limit(start: Start, extra: tuple[str, ...]) -> None:
    server = start(policy="install", extra=extra)
    session = requests.Session()

    def ask(mac: str) -> int:
        url = f"{server.base}/config/pxelinux.cfg/01-{mac.replace(':', '-')}"
        return session.get(url, timeout=30).status_code

    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(ask, macs(2200, "52:54:02")))
    took = time.monotonic() - began
    with Registry.open(server.directory) as registry:
        made = len(registry.list_hosts())
    if extra:
        assert made == 50
    else:  # a minute's worth at once, then the rate
        refilled = took * UNKNOWN_RATE / 60 + 1
        assert UNKNOWN_RATE <= made <= min(UNKNOWN_LIMIT, UNKNOWN_RATE + refilled)
    said = " ".join(extra) or "defaults"
    print(f"\n2,200 unknown MACs in {took:.1f} s ({said}): {made} hosts made")
    assert statuses.count(200) == made
    assert statuses.count(503 if extra else 429) == 2200 - made
    lines = [line for line in server.text().splitlines() if "refusing unknown MACs" in line]
    assert len(lines) == 1, lines  # one line for the burst, not one per request
