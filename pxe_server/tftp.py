"""The read-only TFTP server: rendered boot configs first, then the netboot tree.

Our own server, on an asyncio event loop in one background thread. It replaced tftpy,
whose server we drove through its internals (contexts, states, retransmission) and still
could not bound: its timeout came from the client (255 s was granted), its retries were
spent all at once, a full server answered "server busy" to everyone, and it has one block
in flight per round trip by design, where the next transport work (RFC 7440 windowsize)
needs a send loop that keeps several. The protocol itself is pure (`tftp_protocol.py`);
this module owns the sockets and the limits.

Every transfer is keyed by the client's (address, port) and has a socket of its own (its
TID): a request repeated from the same (address, port) while its transfer runs is ignored
(the transfer's own timer resends), and a datagram from anyone else to a transfer's socket
gets "unknown transfer ID" and changes nothing. Files are opened, and resolve() called, in
one worker thread so that a slow registry or file system never stalls the blocks of other
transfers; the event loop only moves datagrams.

Limits (README, "TFTP limits"), all chosen by the server:
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pxe_server.tftp_protocol import (
    ACCESS_VIOLATION,
    ERROR,
    FILE_NOT_FOUND,
    NOT_DEFINED,
    UNKNOWN_TID,
    FileSource,
    MemorySource,
    PathRefused,
    Refusal,
    Request,
    Source,
    Transfer,
    error_packet,
    locate,
    loggable,
    negotiate,
    normalise_path,
    parse_request,
)

log = logging.getLogger("netinstall.tftp")

Client = tuple[str, int]
Resolve = Callable[[str, Client], bytes | None]

# The server's bounds. An abandoned transfer is reclaimed after (MAX_RETRIES + 1) timeouts:
# 5 s at the default timeout, 15 s when the client asked for MAX_TIMEOUT.
MAX_TRANSFERS = 256  # transfers at once, all clients; when full, a new request evicts one
MAX_PER_ADDRESS = 8  # transfers at once from one client address (any port)
DEFAULT_TIMEOUT = 1  # seconds before a block (or OACK) is sent again
MAX_TIMEOUT = 3  # seconds: the largest timeout option acknowledged; above it, ours is used
MAX_RETRIES = 4  # retransmissions of one block before the transfer is dropped
TICK = 0.1  # seconds between two looks at the retransmission deadlines
BURST = 64  # datagrams read from one socket before the loop serves the others
DATAGRAM = 65536

__doc__ += f"""
* at most {MAX_TRANSFERS} transfers at once; a request that finds them all taken evicts
  the transfer that has waited longest for an ACK (an abandoned one first), so a new client
  is always served and a flood only ever crowds out itself;
* at most {MAX_PER_ADDRESS} at once from one address (a boot loader fetches one file at a
  time): beyond, that address's longest-waiting transfer goes if it has missed an ACK,
  else the new request is refused with "too many transfers from your address";
* a block unacknowledged for the timeout ({DEFAULT_TIMEOUT} s, or the client's
  `timeout` option from 1 to {MAX_TIMEOUT} s; a larger one is not acknowledged) is sent
  again, at most {MAX_RETRIES} times; then the transfer is dropped and its socket and
  file are closed.
"""


@dataclass(frozen=True)
class Limits:
    """The bounds one server applies (the module's constants unless a test asks smaller)."""

    max_transfers: int = MAX_TRANSFERS
    max_per_address: int = MAX_PER_ADDRESS
    timeout: int = DEFAULT_TIMEOUT
    max_timeout: int = MAX_TIMEOUT
    retries: int = MAX_RETRIES


@dataclass(eq=False)
class _Slot:
    """One admitted request: opening (transfer None), then sending from a socket of its own."""

    client: Client
    name: str
    admitted: float
    transfer: Transfer | None = None
    sock: socket.socket | None = None
    started: float = 0.0
    ended: bool = False

    def waiting_since(self) -> float:
        return self.admitted if self.transfer is None else self.transfer.waiting_since


class TftpServer:
    """Serves resolve(path, client) when it gives bytes, else files under ROOT; never writes."""

    def __init__(
        self,
        root: Path,
        resolve: Resolve,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - a PXE server answers on every interface by default
        port: int = 69,
        limits: Limits | None = None,
    ) -> None:
        self.root = Path(root)
        self._resolve = resolve
        self._host = host
        self._requested_port = port
        self._limits = limits or Limits()
        self._sock: socket.socket | None = None
        self._service: _Service | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        return self._requested_port if self._sock is None else int(self._sock.getsockname()[1])

    @property
    def transfers(self) -> int:
        """Transfers admitted and not yet ended (opening or sending)."""
        return 0 if self._service is None else len(self._service.slots)

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
        service = self._service = _Service(self.root, self._resolve, self._host, self._limits)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=service.run, args=(sock, ready), name="netinstall-tftp", daemon=True
        )
        self._thread.start()
        ready.wait()
        log.info("tftp serving %s on %s:%d", self.root, self._host, self.port)

    def stop(self) -> None:
        """Drop running transfers, release the port and join the threads."""
        if self._stopped:
            return
        self._stopped = True
        if self._service is not None and self._thread is not None:
            self._service.loop.call_soon_threadsafe(self._service.loop.stop)
            self._thread.join()
            self._thread = None
        if self._sock is not None:
            self._sock.close()


class _Service:
    """Everything that runs on the event loop's thread: admission, limits, transfers."""

    def __init__(self, root: Path, resolve: Resolve, host: str, limits: Limits) -> None:
        self.root, self.resolve, self.host, self.limits = root, resolve, host, limits
        self.loop = asyncio.new_event_loop()
        self.opener = ThreadPoolExecutor(1, thread_name_prefix="netinstall-tftp-open")
        self.slots: dict[Client, _Slot] = {}

    def run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        loop.add_reader(sock.fileno(), self._on_request, sock)
        loop.call_later(TICK, self._tick)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            for slot in list(self.slots.values()):
                self._end(slot, "server stopped")
            # Opens under way end too; what they opened is closed by the callbacks they
            # scheduled (run here) or, once the loop is closed, by _opened_threadsafe.
            self.opener.shutdown(wait=True, cancel_futures=True)
            loop.run_until_complete(asyncio.sleep(0))
            loop.remove_reader(sock.fileno())
            loop.close()

    def _on_request(self, sock: socket.socket) -> None:
        for _ in range(BURST):
            try:
                data, client = sock.recvfrom(DATAGRAM)
            except OSError:  # nothing more to read (or an ICMP error report): wait for more
                return
            self._admit(data, (client[0], client[1]))

    def _admit(self, data: bytes, client: Client) -> None:
        if client in self.slots or data[:2] == ERROR.to_bytes(2, "big"):
            return  # a repeated request of a running transfer, or an error: never answered
        name = "?"
        try:
            request = parse_request(data)
            name = loggable(request.filename)
            relative = normalise_path(request.filename)
        except Refusal as refusal:
            self._refuse(client, name, refusal)
            return
        except PathRefused as refused:
            self._refuse(client, name, Refusal(ACCESS_VIOLATION, "access violation", str(refused)))
            return
        if not self._make_room(client[0]):
            cap = self.limits.max_per_address
            busy = Refusal(NOT_DEFINED, "too many transfers from your address", f"{cap} running")
            self._refuse(client, name, busy)
            return
        slot = _Slot(client, name, self.loop.time())
        self.slots[client] = slot
        future = self.opener.submit(self._open, relative, client)
        future.add_done_callback(lambda done: self._opened_threadsafe(slot, request, done))

    def _make_room(self, address: str) -> bool:
        """Whether a new request from ADDRESS can be admitted, evicting one transfer if need
        be: at its address's cap, that address's longest-waiting transfer if it has missed
        an ACK (else the request is refused); at the global cap, the longest-waiting of all."""
        mine = [slot for slot in self.slots.values() if slot.client[0] == address]
        if len(mine) >= self.limits.max_per_address:
            stalled = min(mine, key=_Slot.waiting_since)
            transfer = stalled.transfer
            if transfer is None or transfer.tries == 0:
                return False
            self._evict(stalled, "its address's transfer cap")
        elif len(self.slots) >= self.limits.max_transfers:
            oldest = min(self.slots.values(), key=_Slot.waiting_since)
            self._evict(oldest, "the server is full")
        return True

    def _evict(self, slot: _Slot, reason: str) -> None:
        if slot.sock is not None:
            busy = error_packet(NOT_DEFINED, "transfer dropped, server busy")
            self._send(slot.sock, busy, slot.client)
        waited = self.loop.time() - slot.waiting_since()
        self._end(slot, f"evicted for a new request ({reason}) after {waited:.1f}s without an ACK")

    def _opened_threadsafe(self, slot: _Slot, request: Request, done: Future[Source]) -> None:
        try:
            self.loop.call_soon_threadsafe(self._opened, slot, request, done)
        except RuntimeError:  # the loop is closed: the server stopped meanwhile
            _close_result(done)

    def _opened(self, slot: _Slot, request: Request, done: Future[Source]) -> None:
        if slot.ended:
            _close_result(done)
            return
        try:
            source = done.result()
        except Refusal as refusal:
            self._drop_unopened(slot, refusal)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must cost one request, not the server
            self._drop_unopened(slot, Refusal(NOT_DEFINED, "server error", repr(exc)))
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, 0))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            source.close()
            self._drop_unopened(slot, Refusal(NOT_DEFINED, "server error", str(exc)))
            return
        now = self.loop.time()
        options = negotiate(request.options, source.size, self.limits.max_timeout)
        limits = self.limits
        transfer = Transfer(
            source, options, timeout=limits.timeout, retries=limits.retries, now=now
        )
        slot.transfer, slot.sock, slot.started = transfer, sock, now
        self.loop.add_reader(sock.fileno(), self._on_datagram, slot, sock, transfer)
        self._step(slot, sock, transfer, lambda: transfer.start(now))

    def _drop_unopened(self, slot: _Slot, refusal: Refusal) -> None:
        slot.ended = True
        if self.slots.get(slot.client) is slot:
            del self.slots[slot.client]
        self._refuse(slot.client, slot.name, refusal)

    def _on_datagram(self, slot: _Slot, sock: socket.socket, transfer: Transfer) -> None:
        for _ in range(BURST):
            if slot.ended:
                return
            try:
                data, source = sock.recvfrom(DATAGRAM)
            except OSError:
                return
            if (source[0], source[1]) != slot.client:  # RFC 1350: no effect on the transfer
                self._send(sock, error_packet(UNKNOWN_TID, "unknown transfer ID"), source)
                continue
            now = self.loop.time()
            self._step(slot, sock, transfer, lambda: transfer.receive(data, now))  # noqa: B023

    def _step(
        self,
        slot: _Slot,
        sock: socket.socket,
        transfer: Transfer,
        make: Callable[[], list[bytes] | None],
    ) -> None:
        """One step of SLOT's transfer: MAKE gives the datagrams (at once), sent here."""
        try:
            packets = make()
        except OSError as exc:  # the file could not be read
            self._send(sock, error_packet(NOT_DEFINED, "read error"), slot.client)
            self._end(slot, f"read error: {exc.strerror or exc}")
            return
        for packet in packets or ():
            if not self._send(sock, packet, slot.client):
                break  # the socket's buffer is full: the timer resends
        if transfer.done:
            self._end(slot, transfer.error)

    def _tick(self) -> None:
        self.loop.call_later(TICK, self._tick)
        now = self.loop.time()
        for slot in list(self.slots.values()):
            sock, transfer = slot.sock, slot.transfer
            if sock is None or transfer is None or slot.ended or now < transfer.deadline:
                continue
            self._step(slot, sock, transfer, lambda: transfer.expire(now))  # noqa: B023

    @staticmethod
    def _send(sock: socket.socket, packet: bytes, to: tuple[str, int]) -> bool:
        """Send PACKET; False when nothing more should be sent now (a full buffer)."""
        try:
            sock.sendto(packet, to)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # unreachable, or an ICMP report of a closed port: the timer decides
            return False
        return True

    def _refuse(self, client: Client, name: str, refusal: Refusal) -> None:
        """Answer with an ERROR packet from a fresh port (a TID of its own), as RFC 1350 has it."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((self.host, 0))
                sock.sendto(error_packet(refusal.code, refusal.message), client)
            except OSError as exc:
                log.info(
                    "tftp %s:%d %s: refused (%s), unsent: %s", *client, name, refusal.reason, exc
                )
                return
        log.info("tftp %s:%d %s: refused (%s)", *client, name, refusal.reason)

    def _end(self, slot: _Slot, error: str | None) -> None:
        if slot.ended:
            return
        slot.ended = True
        if self.slots.get(slot.client) is slot:
            del self.slots[slot.client]
        if slot.sock is not None:
            self.loop.remove_reader(slot.sock.fileno())
            slot.sock.close()
        transfer = slot.transfer
        if transfer is not None:
            transfer.source.close()
        if error is None and transfer is not None:
            seconds = self.loop.time() - slot.started
            log.info(
                "tftp %s:%d %s: %d bytes in %.2fs",
                *slot.client,
                slot.name,
                transfer.delivered,
                seconds,
            )
        else:
            log.info("tftp %s:%d %s: failed (%s)", *slot.client, slot.name, error)

    # -- the opener's thread ---------------------------------------------------------------

    def _open(self, relative: str, client: Client) -> Source:
        """resolve() first, then the tree; Refusal for anything that cannot be served."""
        try:
            content = self.resolve(relative, client)
        except Exception:
            log.exception("tftp resolve failed for %s", loggable(relative))
            raise Refusal(NOT_DEFINED, "server error", "resolve failed") from None
        if content is not None:
            return MemorySource(content)
        return open_file(self.root, relative)


def open_file(root: Path, relative: str) -> FileSource:
    """RELATIVE under ROOT, open for reading; Refusal (one sentence for the log) if it
    escapes, is missing, is no regular file or cannot be read (a symlink loop, a FIFO)."""
    try:
        path = locate(root, relative)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except PathRefused as refused:
        raise Refusal(ACCESS_VIOLATION, "access violation", str(refused)) from None
    except (FileNotFoundError, NotADirectoryError):
        raise Refusal(FILE_NOT_FOUND, "File not found", "no such regular file") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise Refusal(ACCESS_VIOLATION, "access violation", f"cannot read it: {reason}") from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        raise Refusal(FILE_NOT_FOUND, "File not found", "no such regular file")
    return FileSource(fd)


def _close_result(done: Future[Source]) -> None:
    if not done.cancelled() and done.exception() is None:
        done.result().close()
