"""A small, cheap load client for the benchmarks: HTTP/1.1 keep-alive over asyncio streams,
a TFTP read request over UDP, latency percentiles and a server process's CPU and memory.

Cheap on purpose: the client shares the machine's two cores with the server it measures,
so it parses only the status line, ``Content-Length`` and the body. Used by
``http_servers.py`` (small requests) and ``fleet.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class HttpError(Exception):
    """A request that got no reply, or a reply it should not have."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        if not isinstance(value, dict):
            raise HttpError(f"not a JSON object: {self.body[:80]!r}")
        return value


class Connection:
    """One keep-alive HTTP/1.1 connection (reopened when the server closes it)."""

    def __init__(
        self, host: str, port: int, timeout: float = 30.0, source: str | None = None
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.source = None if source is None else (source, 0)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, local_addr=self.source
            )
        return self._reader, self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        async with asyncio.timeout(self.timeout):
            try:
                return await self._request(method, path, body, headers or {})
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()  # a keep-alive connection the server closed: once more, new
                return await self._request(method, path, body, headers or {})

    async def _request(
        self, method: str, path: str, body: object, headers: Mapping[str, str]
    ) -> Reply:
        reader, writer = await self._open()
        data = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        header = await reader.readuntil(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        reply = Reply(status, await reader.readexactly(length))
        if close:
            self.close()
        return reply


# A PXE ROM's TFTP client resends its last packet (the read request, or its last ACK) from
# the same port when nothing came back: after these timeouts, one after the other, then
# it gives up (iPXE and pxelinux back off from under a second to a few seconds).
TFTP_TIMEOUTS = (1.0, 2.0, 4.0, 8.0)


async def tftp_get(
    host: str,
    port: int,
    name: str,
    *,
    timeouts: tuple[float, ...] = TFTP_TIMEOUTS,
    source: str | None = None,
    resent: list[int] | None = None,
) -> bytes:
    """A file over TFTP (RFC 1350, blksize 512, no options), as a PXE ROM asks for it,
    from the address ``source`` (a host's own: servers limit transfers per address).
    A packet unanswered for ``timeouts[i]`` is sent again from the same port (so the
    server can tell it is the same request); ``resent[0]`` counts those resends."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            queue.put_nowait((data, addr))

    transport, _ = await loop.create_datagram_endpoint(Protocol, local_addr=(source or host, 0))
    try:
        last: tuple[bytes, tuple[str, int]] = (b"\0\1" + name.encode() + b"\0octet\0", (host, port))
        transport.sendto(*last)
        data, expected, peer, tries = bytearray(), 1, None, 0
        while True:
            try:
                async with asyncio.timeout(timeouts[tries]):
                    packet, addr = await queue.get()
            except TimeoutError:
                tries += 1
                if tries == len(timeouts):
                    raise
                transport.sendto(*last)
                if resent is not None:
                    resent[0] += 1
                continue
            opcode, block = struct.unpack("!HH", packet[:4])
            if opcode == 5:
                raise HttpError(f"TFTP error {block}: {packet[4:-1].decode(errors='replace')}")
            if opcode != 3 or (peer is not None and addr != peer):
                continue
            peer, tries = addr, 0
            if block == expected:
                data += packet[4:]
                expected = (expected + 1) % 65536
            last = (struct.pack("!HH", 4, block), addr)
            transport.sendto(*last)
            if block == (expected - 1) % 65536 and len(packet) - 4 < 512:
                return bytes(data)
    finally:
        transport.close()


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile of ``values`` (``share`` 0..1); nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its threads so far."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def rate(
    host: str,
    port: int,
    path: str,
    *,
    connections: int,
    seconds: float,
    headers: Mapping[str, str] | None = None,
    expect: int = 200,
) -> tuple[float, list[float]]:
    """GET ``path`` on ``connections`` keep-alive connections for ``seconds``: requests a
    second and every request's latency (s). HttpError on any other status."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        conn = Connection(host, port)
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                reply = await conn.request("GET", path, headers=headers)
                latencies.append(time.perf_counter() - start)
                if reply.status != expect:
                    raise HttpError(f"GET {path}: {reply.status} {reply.body[:200]!r}")
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return len(latencies) / (time.perf_counter() - start), latencies
