"""A read-only TFTP server: rendered boot configs first, then the netboot tree.

tftpy carries the transfers (its server context, its DAT/ACK state machine and
retransmission), but the request itself is decided here: tftpy's stock server
would open a file under its root for any WRQ, prefer the root over dynamic
content and answer escapes with the wrong code. Every first datagram is parsed
and judged by this module before tftpy sees anything, so a write request never
reaches tftpy's state machine and always gets "access violation, read-only
server" back.
"""

from __future__ import annotations

import io
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from tftpy import TftpContexts, TftpStates
from tftpy.TftpShared import TftpException, TftpTimeout, TftpTimeoutExpectACK

log = logging.getLogger("netinstall.tftp")

Resolve = Callable[[str, tuple[str, int]], bytes | None]

RRQ, WRQ, ERROR = 1, 2, 5
NOT_DEFINED, FILE_NOT_FOUND, ACCESS_VIOLATION, ILLEGAL_OPERATION, UNKNOWN_TID = 0, 1, 2, 4, 5
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464  # RFC 2348
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255  # RFC 2349
_DATAGRAM = 65536
_MODES = ("octet", "netascii")  # both served byte for byte, as boot loaders expect


class PathRefused(ValueError):
    """A requested name that could reach outside the root."""


class Refusal(Exception):
    """A request answered with a TFTP ERROR packet."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def normalise_path(name: str) -> str:
    """NAME relative to the root ('/' and '.' runs dropped); PathRefused for '..',
    control characters (NUL too), backslashes and names that end up empty."""
    if "\\" in name or any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        raise PathRefused("control character or backslash in the name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PathRefused("'..' in the name")
    if not parts:
        raise PathRefused("empty name")
    return "/".join(parts)


def locate(root: Path, relative: str) -> Path:
    """The file RELATIVE names under ROOT, symlinks resolved; PathRefused if that is
    outside ROOT, FileNotFoundError if it is no regular file."""
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise PathRefused("resolves outside the root")
    if not target.is_file():
        raise FileNotFoundError(relative)
    return target


def loggable(name: str) -> str:
    """NAME safe for a log line: no query string, no control characters, bounded."""
    name = name.split("?", 1)[0]
    return "".join(char if char.isprintable() else "?" for char in name)[:200]


def error_packet(code: int, message: str) -> bytes:
    return struct.pack("!HH", ERROR, code) + message.encode("ascii", "replace") + b"\0"


@dataclass(frozen=True)
class Request:
    filename: str
    mode: str
    options: dict[str, str]


def parse_request(data: bytes) -> Request:
    """A read request, or Refusal (a write request is always refused)."""
    opcode = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
    if opcode == WRQ:
        raise Refusal(ACCESS_VIOLATION, "read-only server")
    if opcode != RRQ:
        raise Refusal(ILLEGAL_OPERATION, "illegal TFTP operation")
    fields = data[2:].split(b"\0")
    if len(fields) < 3 or fields[-1] != b"":
        raise Refusal(ILLEGAL_OPERATION, "malformed request")
    try:
        name, mode, *rest = (item.decode("utf-8") for item in fields[:-1])
    except UnicodeDecodeError:
        raise Refusal(ACCESS_VIOLATION, "bad file name") from None
    if mode.lower() not in _MODES:
        raise Refusal(ILLEGAL_OPERATION, "unsupported transfer mode")
    options = {key.lower(): value for key, value in zip(rest[0::2], rest[1::2], strict=False)}
    return Request(name, mode.lower(), options)


def negotiate(requested: Mapping[str, str], size: int) -> dict[str, int]:
    """The options to acknowledge: blksize (clamped), tsize (the size), timeout."""
    accepted: dict[str, int] = {}
    for key, text in requested.items():
        try:
            value = int(text)
        except ValueError:
            continue
        if key == "blksize" and value >= MIN_BLKSIZE:
            accepted[key] = min(value, MAX_BLKSIZE)
        elif key == "tsize":
            accepted[key] = size
        elif key == "timeout" and MIN_TIMEOUT <= value <= MAX_TIMEOUT:
            accepted[key] = value
    return accepted


@dataclass
class _Transfer:
    context: Any  # tftpy.TftpContexts.TftpContextServer (untyped)
    client: tuple[str, int]
    path: str
    started: float = field(default_factory=time.monotonic)


class TftpServer:
    """Serves resolve(path, client) when it gives bytes, else files under ROOT; never writes."""

    def __init__(
        self,
        root: Path,
        resolve: Resolve,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - a PXE server answers on every interface by default
        port: int = 69,
        timeout: float = 5.0,
        retries: int = 5,
        max_transfers: int = 512,
    ) -> None:
        self.root = Path(root)
        self._resolve = resolve
        self._host = host
        self._requested_port = port
        self._timeout = timeout
        self._retries = retries
        self._max_transfers = max_transfers
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._transfers: dict[tuple[str, int], _Transfer] = {}
        self._selector = selectors.DefaultSelector()

    @property
    def port(self) -> int:
        return self._requested_port if self._sock is None else int(self._sock.getsockname()[1])

    def start(self) -> None:
        """Bind (errors raise here) and serve in a background thread."""
        if not self.root.is_dir():
            raise NotADirectoryError(f"TFTP root {self.root} is not a directory")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self._host, self._requested_port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="netinstall-tftp", daemon=True
        )
        self._thread.start()
        log.info("tftp serving %s on %s:%d", self.root, self._host, self.port)

    def stop(self) -> None:
        """Drop running transfers, release the port and join the thread."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._selector.close()
        if self._sock is not None:
            self._sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def _serve(self, sock: socket.socket) -> None:
        last_check = 0.0
        while not self._stopping.is_set():
            try:
                for key, _ in self._selector.select(timeout=0.5):
                    if key.fileobj is sock:
                        self._accept(sock)
                    elif isinstance(key.data, _Transfer):
                        self._step(key.data)
                now = time.time()
                if now - last_check >= 0.2:
                    last_check = now
                    self._check_timeouts(now)
            except Exception:  # one bad datagram must not take the server down
                log.exception("tftp: unexpected error, serving on")
        for transfer in list(self._transfers.values()):
            self._finish(transfer, "server stopped")

    def _accept(self, sock: socket.socket) -> None:
        try:
            data, client = sock.recvfrom(_DATAGRAM)
        except OSError:
            return
        if client in self._transfers or data[:2] == struct.pack("!H", ERROR):
            return  # a retransmitted request, or an error: never answer those
        if len(self._transfers) >= self._max_transfers:
            sock.sendto(error_packet(NOT_DEFINED, "server busy"), client)
            return
        context = TftpContexts.TftpContextServer(
            client[0], client[1], self._timeout, str(self.root), retries=self._retries, flock=False
        )
        context.tidport = client[1]
        if self._host not in ("", "0.0.0.0"):  # noqa: S104
            context.sock.bind((self._host, 0))  # answer from the address the client asked
        transfer = _Transfer(context, client, "?")
        try:
            request = parse_request(data)
            transfer.path = loggable(request.filename)
            context.fileobj, size = self._open(request.filename, client)
        except Refusal as refusal:
            context.sock.sendto(error_packet(refusal.code, refusal.message), client)
            context.end()
            log.info("tftp %s:%d %s: refused (%s)", *client, transfer.path, refusal.message)
            return
        context.file_to_transfer = transfer.path
        context.options = negotiate(request.options, size)
        context.timeout = context.options.get("timeout", self._timeout)
        context.metrics.start_time = context.last_update = time.time()
        state = TftpStates.TftpStateExpectACK(context)
        if context.options:
            state.sendOACK()  # next_block is 0: the client ACKs block 0
        else:
            context.next_block = 1
            context.pending_complete = state.sendDAT()
        context.state = state
        self._transfers[client] = transfer
        self._selector.register(context.sock, selectors.EVENT_READ, transfer)

    def _open(self, name: str, client: tuple[str, int]) -> tuple[BinaryIO, int]:
        try:
            relative = normalise_path(name)
        except PathRefused:
            raise Refusal(ACCESS_VIOLATION, "access violation") from None
        try:
            content = self._resolve(relative, client)
        except Exception:
            log.exception("tftp resolve failed for %s", loggable(relative))
            raise Refusal(NOT_DEFINED, "server error") from None
        if content is not None:
            return io.BytesIO(content), len(content)
        try:
            path = locate(self.root, relative)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except (PathRefused, PermissionError):
            raise Refusal(ACCESS_VIOLATION, "access violation") from None
        except OSError:
            raise Refusal(FILE_NOT_FOUND, "File not found") from None
        return os.fdopen(fd, "rb"), os.fstat(fd).st_size

    def _step(self, transfer: _Transfer) -> None:
        context = transfer.context
        try:
            data, source = context.sock.recvfrom(_DATAGRAM)
        except OSError:
            return
        if source != transfer.client:  # RFC 1350: a stranger gets "unknown TID", no effect
            context.sock.sendto(error_packet(UNKNOWN_TID, "unknown transfer ID"), source)
            return
        context.timeout_expectACK = False
        context.last_update = time.time()
        try:
            packet = context.factory.parse(data)
            context.state = context.state.handle(packet, *source)
        except TftpTimeoutExpectACK:
            context.timeout_expectACK = True
            return
        except (TftpException, struct.error, ValueError, OSError) as exc:
            self._finish(transfer, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        context.retry_count = 0
        if context.state is None:
            self._finish(transfer, None)

    def _check_timeouts(self, now: float) -> None:
        for transfer in list(self._transfers.values()):
            context = transfer.context
            try:
                context.checkTimeout(now)
            except TftpTimeout:
                context.retry_count += 1
                if context.retry_count > context.retries:
                    self._finish(transfer, "timed out")
                    continue
                context.timeout_expectACK = False
                context.last_update = now  # tftpy does not: it would burn every retry at once
                try:
                    context.state.resendLast()
                except (TftpException, OSError) as exc:
                    self._finish(transfer, str(exc))

    def _finish(self, transfer: _Transfer, error: str | None) -> None:
        context = transfer.context
        self._transfers.pop(transfer.client, None)
        self._selector.unregister(context.sock)
        context.end()
        seconds = time.monotonic() - transfer.started
        if error is None:
            sent = context.metrics.bytes
            log.info(
                "tftp %s:%d %s: %d bytes in %.2fs", *transfer.client, transfer.path, sent, seconds
            )
        else:
            log.info("tftp %s:%d %s: failed (%s)", *transfer.client, transfer.path, loggable(error))
