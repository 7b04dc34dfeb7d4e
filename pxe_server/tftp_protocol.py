"""TFTP without sockets: datagrams parsed and built, options negotiated, one read transfer's
state (RFC 1350, 2347 option negotiation, 2348 blksize, 2349 tsize and timeout, 7440
windowsize).

Everything here is pure: a `Transfer` takes the client's datagrams and the clock and gives the
datagrams to send, so the server (`tftp.py`) only moves bytes and a test drives a transfer
without a network. It sends a window of blocks (1 without the windowsize option: lockstep,
as RFC 1350 has it) and waits for the ACK of the window's last block.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple, Protocol

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
NOT_DEFINED, FILE_NOT_FOUND, ACCESS_VIOLATION, ILLEGAL_OPERATION, UNKNOWN_TID = 0, 1, 2, 4, 5
DEFAULT_BLKSIZE = 512  # RFC 1350
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464  # RFC 2348
MIN_TIMEOUT = 1  # RFC 2349; the largest one acknowledged is the server's bound (tftp.py)
MIN_WINDOWSIZE = 1  # RFC 7440; the largest one acknowledged is the server's bound (tftp.py)
DATA_HEADER = struct.Struct("!HH")  # opcode DATA, block number
LOGGED_NAME = 200  # characters of a requested name that reach a log line at most
MODES = ("octet", "netascii")  # both served byte for byte, as boot loaders expect
_REFUSED_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\\]")  # control characters, backslash


class PathRefused(ValueError):
    """A requested name that could reach outside the root."""


class Refusal(Exception):
    """A request answered with a TFTP ERROR packet: CODE and MESSAGE go to the client,
    REASON (the message unless given) to the log."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason or message


def normalise_path(name: str) -> str:
    """NAME relative to the root ('/' and '.' runs dropped); PathRefused for '..',
    control characters (NUL too), backslashes and names that end up empty."""
    if _REFUSED_CHARACTERS.search(name):
        raise PathRefused("control character or backslash in the name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PathRefused("'..' in the name")
    if not parts:
        raise PathRefused("empty name")
    return "/".join(parts)


def locate(root: Path, relative: str) -> Path:
    """The file RELATIVE names under ROOT, symlinks resolved; PathRefused if that is
    outside ROOT, FileNotFoundError if it is no regular file, OSError if it cannot be
    resolved (a symlink loop: ELOOP)."""
    base = Path(os.path.realpath(root, strict=True))
    target = Path(os.path.realpath(base / relative, strict=True))
    if not target.is_relative_to(base):
        raise PathRefused("resolves outside the root")
    if not target.is_file():
        raise FileNotFoundError(relative)
    return target


def loggable(name: str) -> str:
    """NAME safe for a log line: no query string, no control characters, bounded."""
    name = name.split("?", 1)[0]
    if name.isprintable() and len(name) <= LOGGED_NAME:  # the usual name, as it is
        return name
    return "".join(char if char.isprintable() else "?" for char in name)[:LOGGED_NAME]


def error_packet(code: int, message: str) -> bytes:
    return struct.pack("!HH", ERROR, code) + message.encode("ascii", "replace") + b"\0"


def oack_packet(options: Mapping[str, int]) -> bytes:
    return _OACK + "".join([f"{key}\0{value}\0" for key, value in options.items()]).encode("ascii")


_OACK = OACK.to_bytes(2, "big")


class Request(NamedTuple):
    """A read request: the name as sent, the mode (lower case) and the options (names in
    lower case). A tuple: made once per request, on the loop's thread."""

    filename: str
    mode: str
    options: dict[str, str]


_RRQ, _WRQ = RRQ.to_bytes(2, "big"), WRQ.to_bytes(2, "big")


def parse_request(data: bytes) -> Request:
    """A read request, or Refusal (a write request is always refused)."""
    if data[:2] != _RRQ:
        if data[:2] == _WRQ:
            raise Refusal(ACCESS_VIOLATION, "read-only server")
        raise Refusal(ILLEGAL_OPERATION, "illegal TFTP operation")
    if data[-1:] != b"\0" or data.count(b"\0", 2) < 2:
        raise Refusal(ILLEGAL_OPERATION, "malformed request")
    try:  # at once: a NUL is never part of another character in UTF-8
        name, mode, *rest = data[2:-1].decode("utf-8").split("\0")
    except UnicodeDecodeError:
        raise Refusal(ACCESS_VIOLATION, "bad file name") from None
    mode = mode.lower()
    if mode not in MODES:
        raise Refusal(ILLEGAL_OPERATION, "unsupported transfer mode")
    options = {key.lower(): value for key, value in zip(rest[0::2], rest[1::2], strict=False)}
    return Request(name, mode, options)


def negotiate(
    requested: Mapping[str, str], size: int, max_timeout: int, max_windowsize: int = 1
) -> dict[str, int]:
    """The options to acknowledge: blksize (clamped), tsize (the size, unless it is 0),
    timeout (from MIN_TIMEOUT to MAX_TIMEOUT seconds: a larger one is not acknowledged and
    the server's is used), windowsize (clamped to MAX_WINDOWSIZE; 0 is not acknowledged,
    nor any when that bound is 1: lockstep, without the OACK's round trip)."""
    accepted: dict[str, int] = {}
    for key, text in requested.items():
        if not (text.isascii() and text.isdigit() and len(text) <= 10):
            continue
        value = int(text)
        if key == "blksize" and value >= MIN_BLKSIZE:
            accepted[key] = min(value, MAX_BLKSIZE)
        elif key == "tsize" and size > 0:  # curl refuses an OACK with tsize 0 (an empty file)
            accepted[key] = size
        elif key == "timeout" and MIN_TIMEOUT <= value <= max_timeout:
            accepted[key] = value
        elif key == "windowsize" and max_windowsize > 1 and value >= MIN_WINDOWSIZE:
            accepted[key] = min(value, max_windowsize)
    return accepted


class Source(Protocol):
    """What a transfer sends: SIZE bytes, read by offset (bytes, or a view of memory the
    source holds, valid until it is closed)."""

    size: int

    def read(self, offset: int, length: int) -> bytes | memoryview: ...

    def close(self) -> None: ...


class MemorySource:
    """Bytes in memory: a rendered boot config, or a file's content the server holds (no
    file read per block; each block a view, copied once, into its datagram)."""

    def __init__(self, content: bytes) -> None:
        self.view = memoryview(content)
        self.size = len(content)

    def read(self, offset: int, length: int) -> memoryview:
        return self.view[offset : offset + length]

    def close(self) -> None:
        self.view.release()


class FileSource:
    """An open regular file, read with pread (no shared offset): what is too big for the
    server's cache. A file that shrinks while it is served raises OSError rather than
    sending a short block as if it ended."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) < min(length, self.size - offset):
            raise OSError("the file shrank while it was served")
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Transfer:
    """One read transfer: windows of blocks sent and acknowledged, retransmission, the end.

    Blocks are counted from 1 without bound; the wire carries them modulo 65536 (rolling
    over to 0, as curl, GRUB and pxelinux expect). The window is the `windowsize` option
    granted (RFC 7440), else 1. A window of blocks goes out at once; an ACK of any block k
    in flight (the window's last one, or the last one the client got in order) means the
    client has every block to k: the next window starts at k + 1 (so a gap is sent again at
    once). A duplicate or stale ACK is never answered (RFC 1350's Sorcerer's Apprentice):
    only the timer sends the blocks in flight again.
    """

    __slots__ = (
        "_oack",
        "_view",
        "acked",
        "blksize",
        "blocks",
        "deadline",
        "done",
        "error",
        "retries",
        "sent",
        "source",
        "timeout",
        "tries",
        "waiting_since",
        "window",
    )  # fmt: skip

    def __init__(
        self,
        source: Source,
        options: Mapping[str, int],
        *,
        timeout: float,
        retries: int,
        now: float,
    ) -> None:
        self.source = source
        self.blksize = options.get("blksize", DEFAULT_BLKSIZE)
        self.window = options.get("windowsize", 1)
        self.timeout = float(options.get("timeout", timeout))
        self.retries = retries
        self.blocks = source.size // self.blksize + 1  # the last one is short, maybe empty
        self._oack = oack_packet(options) if options else None
        # the content itself when it is in memory: blocks sliced without a call each
        self._view = source.view if isinstance(source, MemorySource) else None
        self.acked = 0  # blocks the client acknowledged
        self.sent = 0  # the highest block sent
        self.tries = 0  # resends of what is in flight
        self.waiting_since = now  # when what is in flight was first sent
        self.deadline = now + self.timeout
        self.done = False
        self.error: str | None = None  # why it ended early

    @property
    def delivered(self) -> int:
        return min(self.acked * self.blksize, self.source.size)

    @property
    def negotiating(self) -> bool:
        """Whether the OACK is out and unacknowledged (no block sent yet)."""
        return self._oack is not None and self.sent == 0

    def start(self, now: float) -> list[bytes]:
        """The first datagrams: the OACK, or the first blocks when no option was taken."""
        if self._oack is not None:
            self._wait(now)
            return [self._oack]
        return self._advance(0, now)

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """The datagrams to send for one datagram from the client."""
        if len(data) >= 4 and data[1] == ACK and data[0] == 0:  # per block: no slice made
            number = (data[2] << 8) | data[3]
            acked = self.acked
            ahead = (number - acked) & 0xFFFF  # blocks past the last ACK (mod 65536)
            if 0 < ahead <= self.sent - acked:  # one in flight (a window < 65536)
                return self._advance(acked + ahead, now)
            if self.sent == 0 and self._oack is not None and number == 0:
                return self._advance(0, now)  # the OACK acknowledged
            return []
        opcode = int.from_bytes(data[:2], "big") if len(data) >= 2 else -1
        self.done = True
        if opcode == ERROR:
            message = data[4:].split(b"\0", 1)[0].decode("ascii", "replace")
            self.error = f"the client ended it: {loggable(message) or 'error'}"
            return []
        self.error = "illegal TFTP operation from the client"
        return [error_packet(ILLEGAL_OPERATION, "illegal TFTP operation")]

    def expire(self, now: float) -> list[bytes] | None:
        """What to send again when the ACK is overdue ([] when it is not): the OACK, or the
        blocks in flight; None once the retries are spent: the transfer is abandoned."""
        if now < self.deadline:
            return []
        self.tries += 1
        if self.tries > self.retries:
            self.done = True
            self.error = f"no ACK after {self.retries} retransmissions, {self.timeout:g}s apart"
            return None
        self.deadline = now + self.timeout
        if self._oack is not None and self.sent == 0:
            return [self._oack]
        return self._blocks(self.acked + 1, self.sent)

    def _advance(self, acked: int, now: float) -> list[bytes]:
        self.acked = acked
        if acked >= self.blocks:
            self.done = True
            return []
        last = acked + self.window
        last = min(last, self.blocks)
        self.sent = last
        self.tries = 0
        self.waiting_since = now
        self.deadline = now + self.timeout
        view = self._view
        if last == acked + 1 and view is not None:  # lockstep from memory: one block, inline
            offset = acked * self.blksize
            return [DATA_HEADER.pack(DATA, last & 0xFFFF) + view[offset : offset + self.blksize]]
        return self._blocks(acked + 1, last)

    def _wait(self, now: float) -> None:
        self.tries = 0
        self.waiting_since = now
        self.deadline = now + self.timeout

    def _blocks(self, first: int, last: int) -> list[bytes]:
        """Blocks FIRST to LAST as DATA datagrams (each block's bytes copied once)."""
        blksize, pack = self.blksize, DATA_HEADER.pack
        view = self._view
        if view is None:  # read from the file, per block
            read = self.source.read
            return [
                pack(DATA, number & 0xFFFF) + read((number - 1) * blksize, blksize)
                for number in range(first, last + 1)
            ]
        return [
            pack(DATA, number & 0xFFFF) + view[(number - 1) * blksize : number * blksize]
            for number in range(first, last + 1)
        ]
