"""The read-only TFTP server: rendered boot configs first, then the netboot tree.

Our own server, on an event loop of its own (epoll) in one background thread. It replaced tftpy,
whose server we drove through its internals (contexts, states, retransmission) and still
could not bound: its timeout came from the client (255 s was granted), its retries were
spent all at once, a full server answered "server busy" to everyone, and it has one block
in flight per round trip by design, where the next transport work (RFC 7440 windowsize)
needs a send loop that keeps several. The protocol itself is pure (`tftp_protocol.py`);
this module owns the sockets and the limits.

Every transfer is keyed by the client's (address, port) and has a socket of its own (its
TID) while it runs. The sockets are kept for the next transfers (at most SPARE_SOCKETS of
them idle): bound and registered with the loop once, not made, bound, registered,
unregistered and closed per transfer (5 of a small file's 10 system calls); the next
transfer takes the one idle longest, never one whose last transfer was the same client's
(address, port), so a late datagram of the previous transfer can never pass for its
client's next one's. A request repeated from the same (address, port) while its transfer
runs is ignored (the transfer's own timer resends), and a datagram from anyone else to a
transfer's socket gets "unknown transfer ID" and changes nothing. Files are opened, and
resolve() called, in worker threads (one, or ``openers`` where resolve() waits on the
network: a registry on PostgreSQL) so that a slow registry or file system never stalls
the blocks of other transfers; the event loop only moves datagrams. A server may also give
`resolve_now`, which the loop calls itself and which must not block: what it answers at
once (a boot config the render cache holds, or "no dynamic file here") saves the hand-off
to the opener thread and back (a third of a small file's CPU); LATER sends the request on
to resolve().

Files are served from memory: the opener reads a file whole into a small cache keyed by its
path, device, inode, size and modification time (a file replaced or rewritten is read
anew), so a transfer never reads the file per block, and a file changed while it is served
cannot corrupt the transfer (each transfer keeps the content it started with). Only a file
too big for the cache is read per block (pread). A window of blocks (RFC 7440) leaves in
one sendmsg() where the kernel can cut it into datagrams itself (Linux UDP GSO,
UDP_SEGMENT); where it cannot (an old kernel, a device without checksum offload), the
blocks go one sendto() each.

Limits (README, "TFTP limits"), all chosen by the server:
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import select
import socket
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
_clock = time.monotonic  # the loop's time (_Loop.time)

Client = tuple[str, int]
Resolve = Callable[[str, Client], bytes | None]


class Later(enum.Enum):
    """resolve_now's answer when only resolve() (on the opener thread) can tell."""

    LATER = "later"


LATER = Later.LATER
ResolveNow = Callable[[str, Client], bytes | Later | None]

# The server's bounds. An abandoned transfer is reclaimed after (MAX_RETRIES + 1) timeouts:
# 5 s at the default timeout, 15 s when the client asked for MAX_TIMEOUT.
MAX_TRANSFERS = 256  # transfers at once, all clients; see _make_room for a request past it
UNANSWERED_LOG = 1.0  # seconds: requests left unanswered (the server full) are logged as a
# count at most this often, not a line each
SPARE_SOCKETS = 64  # transfer sockets kept idle, bound, for the next transfers at most
MAX_PER_ADDRESS = 8  # transfers at once from one client address (any port)
DEFAULT_TIMEOUT = 1  # seconds before a block (or OACK) is sent again
MAX_TIMEOUT = 3  # seconds: the largest timeout option acknowledged; above it, ours is used
MAX_RETRIES = 4  # retransmissions of one block before the transfer is dropped
MAX_WINDOWSIZE = 64  # blocks in flight at most (RFC 7440 windowsize; a larger ask gets this)
CACHE_FILES = 32  # files held in memory at most (least recently served dropped first) ...
CACHE_BYTES = 256 * 1024 * 1024  # ... and at most this many bytes of them; a bigger file
# is read per block. Transfers running keep the content they started with.
TICK = 0.1  # seconds between two looks at the retransmission deadlines
DATAGRAM = 65536  # bytes read of a request
REPLY = 512  # bytes read of a datagram inside a transfer (an ACK has 4; an ERROR's text is cut)
# Linux UDP GSO (udp(7), UDP_SEGMENT): one send of many equal datagrams (the last shorter)
UDP_SEGMENT = 103
GSO_SEGMENTS = 64  # datagrams per send at most (the kernel's UDP_MAX_SEGMENTS)
GSO_BYTES = 65507  # bytes per send at most (the largest UDP payload over IPv4)
GSO_UNSUPPORTED = {errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}
_ERROR_OPCODE = ERROR.to_bytes(2, "big")

__doc__ += f"""
* at most {MAX_TRANSFERS} transfers at once; a request that finds them all taken evicts
  the transfer that has waited longest for an ACK among those that have missed one (their
  timer fired: abandoned ones, or a client that lost a packet), so a flood of abandoned
  transfers only ever crowds out itself; when none has missed one, the request is left
  unanswered (its client asks again after its own timeout: a PXE ROM, GRUB and curl
  resend a request, where an ERROR ends their boot), so no transfer that is going well is
  ever given up and started again; a new client is served once a transfer has ended or
  missed an ACK;
* at most {MAX_PER_ADDRESS} at once from one address (a boot loader fetches one file at a
  time): beyond, that address's longest-waiting transfer goes if it has missed an ACK,
  else the new request is refused with "too many transfers from your address";
* a block unacknowledged for the timeout ({DEFAULT_TIMEOUT} s, or the client's
  `timeout` option from 1 to {MAX_TIMEOUT} s; a larger one is not acknowledged) is sent
  again, at most {MAX_RETRIES} times; then the transfer is dropped and its socket and
  file are closed;
* at most {MAX_WINDOWSIZE} blocks in flight per transfer (a larger `windowsize` option is
  acknowledged as {MAX_WINDOWSIZE}): a transfer's burst is bounded whatever it asks;
* at most {CACHE_FILES} files, {CACHE_BYTES // 2**20} MiB, held in memory for serving;
* at most {SPARE_SOCKETS} transfer sockets kept idle, bound, for the next transfers.
"""


@dataclass(frozen=True)
class Limits:
    """The bounds one server applies (the module's constants unless a test asks smaller)."""

    max_transfers: int = MAX_TRANSFERS
    max_per_address: int = MAX_PER_ADDRESS
    timeout: int = DEFAULT_TIMEOUT
    max_timeout: int = MAX_TIMEOUT
    retries: int = MAX_RETRIES
    max_windowsize: int = MAX_WINDOWSIZE
    spare_sockets: int = SPARE_SOCKETS
    cache_files: int = CACHE_FILES
    cache_bytes: int = CACHE_BYTES


@dataclass(eq=False, slots=True)
class _Channel:
    """A transfer's socket (its TID), registered with the loop for as long as it is open:
    serving SLOT's TRANSFER, or idle (both None) after serving LAST, the client of its last
    transfer."""

    sock: socket.socket
    slot: _Slot | None = None
    transfer: Transfer | None = None
    last: Client | None = None


@dataclass(eq=False, slots=True)
class _Slot:
    """One admitted request: opening (transfer None), then sending from a socket of its own."""

    client: Client
    name: str
    admitted: float
    transfer: Transfer | None = None
    sock: socket.socket | None = None
    channel: _Channel | None = None
    started: float = 0.0
    ended: bool = False
    # how a window is sent: GSO ancillary data and datagrams per send, or None: one by one
    gso: tuple[list[tuple[int, int, bytes]], int] | None = None

    def waiting_since(self) -> float:
        return self.admitted if self.transfer is None else self.transfer.waiting_since


class TftpServer:
    """Serves resolve(path, client) when it gives bytes, else files under ROOT; never writes.
    RESOLVE_NOW(path, client), if given, is asked first, on the loop's thread: bytes to
    serve, None (no dynamic file: the tree), or LATER (ask resolve())."""

    def __init__(
        self,
        root: Path,
        resolve: Resolve,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - a PXE server answers on every interface by default
        port: int = 69,
        limits: Limits | None = None,
        resolve_now: ResolveNow | None = None,
        openers: int = 1,
    ) -> None:
        self.root = Path(root)
        self._resolve = resolve
        self._resolve_now = resolve_now
        self._openers = openers  # opener threads: resolves (and opens) under way at once
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
        service = self._service = _Service(
            self.root,
            self._resolve,
            self._host,
            self._limits,
            self._resolve_now,
            openers=self._openers,
        )
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


class _LineLog:
    """LOGGER's INFO lines from one thread (the loop's: a line per transfer), each record a
    copy of one made once on that thread, with its time and message set. Logger.info makes
    a LogRecord per line (the caller's frame looked up, the thread's, process's and
    module's names): about half of the 13 us a line cost the loop here. Levels, filters,
    handlers and format are the logger's as for any other record."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._template: dict[str, Any] | None = None

    def __call__(self, message: str, *args: object) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        template = self._template
        if template is None:
            made = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "", (), None)
            template = self._template = dict(made.__dict__)
        record = logging.LogRecord.__new__(logging.LogRecord)
        fields = record.__dict__
        fields.update(template)
        now = time.time()
        fields["created"] = now
        fields["msecs"] = int((now - int(now)) * 1000) + 0.0  # as LogRecord counts them
        fields["relativeCreated"] = template["relativeCreated"] + (now - template["created"]) * 1000
        fields["msg"], fields["args"] = message, args
        logger.handle(record)


_line = _LineLog(log)


class _Loop:
    """The TFTP thread's event loop: epoll (level-triggered), one callback per descriptor,
    callbacks from other threads queued and signalled through an eventfd, one periodic tick.

    Not asyncio's: the server pays the loop's dispatch once per block (lockstep) or per
    window, and asyncio's costs 4.7 us per ready descriptor on this 2-core machine against
    3.1 us for this one, 2.0 of which are the two syscalls of a datagram in and one out.
    """

    def __init__(self) -> None:
        self.time = _clock
        self._epoll = select.epoll()
        self._readers: dict[int, tuple[Callable[..., None], tuple[Any, ...]]] = {}
        self._pending: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._running = False
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.add_reader(self._wake, self._run_pending)

    def add_reader(self, fd: int, callback: Callable[..., None], *args: Any) -> None:
        self._readers[fd] = (callback, args)
        self._epoll.register(fd, select.EPOLLIN)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def call_soon_threadsafe(self, callback: Callable[..., None], *args: Any) -> None:
        """Run CALLBACK(*ARGS) on the loop's thread; RuntimeError once the loop is closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the TFTP loop is closed")
            self._pending.append((callback, args))
            os.eventfd_write(self._wake, 1)

    def stop(self) -> None:
        self._running = False

    def run_forever(self, tick: Callable[[], None], interval: float) -> None:
        """Dispatch until stop(); TICK every INTERVAL seconds."""
        self._running = True
        readers, poll, clock = self._readers, self._epoll.poll, self.time
        next_tick = clock() + interval
        while self._running:
            events = poll(max(0.0, next_tick - clock()))
            try:
                for fd, _ in events:
                    entry = readers.get(fd)  # None: removed by a callback of this round
                    if entry is not None:
                        entry[0](*entry[1])
                if clock() >= next_tick:
                    next_tick = clock() + interval
                    tick()
            except Exception:  # a bug costs one callback, never the server
                log.exception("tftp: unexpected error")

    def _run_pending(self) -> None:
        with contextlib.suppress(BlockingIOError):  # none written since the last read
            os.eventfd_read(self._wake)
        while self._pending:
            callback, args = self._pending.popleft()
            callback(*args)

    def close(self) -> None:
        """Run what other threads queued, then close (later calls get RuntimeError)."""
        with self._lock:
            self._closed = True
        self._run_pending()
        self._epoll.close()
        os.close(self._wake)


class _Service:
    """Everything that runs on the event loop's thread: admission, limits, transfers."""

    def __init__(
        self,
        root: Path,
        resolve: Resolve,
        host: str,
        limits: Limits,
        resolve_now: ResolveNow | None = None,
        *,
        openers: int = 1,
    ) -> None:
        self.root, self.resolve, self.host, self.limits = root, resolve, host, limits
        self.resolve_now = resolve_now
        self.loop = _Loop()
        self.opener = ThreadPoolExecutor(openers, thread_name_prefix="netinstall-tftp-open")
        self.cache = FileCache(limits.cache_files, limits.cache_bytes)  # the opener's only
        self.slots: dict[Client, _Slot] = {}
        self.per_address: dict[str, int] = {}  # slots by client address (none: absent)
        self.spare: deque[_Channel] = deque()  # idle transfer sockets, the longest idle first
        # transfers that missed an ACK at the last tick, the longest waiting last (maybe
        # ended or going again since: looked at when taken)
        self.stalled: list[_Slot] = []
        self.unanswered = 0  # requests left unanswered, the server full, not yet logged
        self.unanswered_logged = 0.0  # when they were last logged

    def run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = self.loop
        loop.add_reader(sock.fileno(), self._on_request, sock)
        ready.set()
        try:
            loop.run_forever(self._tick, TICK)
        finally:
            for slot in list(self.slots.values()):
                self._end(slot, "server stopped")
            # Opens under way end too; what they opened is closed by the callbacks they
            # queued (run by close()) or, once the loop is closed, by _opened_threadsafe.
            self.opener.shutdown(wait=True, cancel_futures=True)
            self.cache.clear()
            while self.spare:
                self._close_channel(self.spare.popleft())
            loop.remove_reader(sock.fileno())
            loop.close()

    def _on_request(self, sock: socket.socket) -> None:
        # One request per call, as _on_datagram reads one ACK: requests mostly come one at
        # a time, and a second read would find none (a failed syscall and an exception per
        # request); while more wait, the loop calls again, each round with the ACKs of the
        # transfers running.
        try:
            data, client = sock.recvfrom(DATAGRAM)  # an IPv4 socket's (address, port)
        except OSError:  # read meanwhile (or an ICMP error report): wait for more
            return
        self._admit(data, client)

    def _admit(self, data: bytes, client: Client) -> None:
        if client in self.slots or data[:2] == _ERROR_OPCODE:
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
        slots, per_address, limits = self.slots, self.per_address, self.limits
        address = client[0]
        mine = per_address.get(address, 0)
        if not (
            mine < limits.max_per_address and len(slots) < limits.max_transfers
        ) and not self._make_room(client, name):
            return
        slot = _Slot(client, name, self.loop.time())
        slots[client] = slot
        per_address[address] = per_address.get(address, 0) + 1  # _make_room may evict
        content: bytes | Later | None = LATER
        if self.resolve_now is not None:
            try:
                content = self.resolve_now(relative, client)
            except Refusal as refused:  # resolve_now's own (the registry unavailable)
                self._drop_unopened(slot, refused)
                return
            except Exception:
                log.exception("tftp resolve_now failed for %s", name)
                self._drop_unopened(slot, Refusal(NOT_DEFINED, "server error", "resolve failed"))
                return
        if isinstance(content, bytes):
            self._start(slot, request, MemorySource(content))
            return
        future = self.opener.submit(self._open, relative, client, content is LATER)
        future.add_done_callback(lambda done: self._opened_threadsafe(slot, request, done))

    def _make_room(self, client: Client, name: str) -> bool:
        """Whether a new request (for NAME) from CLIENT can be admitted, evicting a transfer
        that has missed an ACK if need be. At its address's cap: that address's longest-
        waiting transfer if it has, else the request is refused ("too many transfers from
        your address"). At the server's cap: the longest-waiting transfer that had missed
        one at the last tick, else the request is left unanswered (its client resends it)."""
        address = client[0]
        if self.per_address.get(address, 0) >= self.limits.max_per_address:
            mine = [slot for slot in self.slots.values() if slot.client[0] == address]
            stalled = min(mine, key=_Slot.waiting_since)
            transfer = stalled.transfer
            if transfer is None or transfer.tries == 0:
                cap = self.limits.max_per_address
                busy = Refusal(
                    NOT_DEFINED, "too many transfers from your address", f"{cap} running"
                )
                self._refuse(client, name, busy)
                return False
            self._evict(stalled, "its address's transfer cap")
        elif len(self.slots) >= self.limits.max_transfers:
            stalled_slots = self.stalled
            while stalled_slots:
                slot = stalled_slots.pop()
                transfer = slot.transfer
                if not slot.ended and transfer is not None and transfer.tries:
                    self._evict(slot, "the server is full")
                    return True
            self.unanswered += 1
            return False
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
        self._start(slot, request, source)

    def _start(self, slot: _Slot, request: Request, source: Source) -> None:
        """Send SOURCE to SLOT's client from a socket of its own."""
        try:
            channel = self._channel(slot.client)
        except OSError as exc:
            source.close()
            self._drop_unopened(slot, Refusal(NOT_DEFINED, "server error", str(exc)))
            return
        sock = channel.sock
        now = self.loop.time()
        limits = self.limits
        options = negotiate(request.options, source.size, limits.max_timeout, limits.max_windowsize)
        transfer = Transfer(
            source, options, timeout=limits.timeout, retries=limits.retries, now=now
        )
        slot.transfer, slot.sock, slot.channel, slot.started = transfer, sock, channel, now
        channel.slot, channel.transfer = slot, transfer
        if transfer.window > 1:
            segment = 4 + transfer.blksize
            per_send = min(GSO_SEGMENTS, GSO_BYTES // segment)
            if per_send > 1:
                gso = [(socket.SOL_UDP, UDP_SEGMENT, segment.to_bytes(2, "little"))]
                slot.gso = (gso, per_send)
        packets = transfer.start(now)
        if len(packets) == 1:  # an OACK, or lockstep's first block: no window to cut
            self._send(sock, packets[0], slot.client)
            if transfer.done:
                self._end(slot, transfer.error)
            return
        self._step(slot, sock, transfer, packets)

    def _channel(self, client: Client) -> _Channel:
        """A socket to serve CLIENT from: the one idle longest (or the one idle least, if
        that one last served CLIENT's address and port), else a new one; OSError if none
        can be made."""
        spare = self.spare
        if spare:
            if spare[0].last != client:
                return spare.popleft()
            if spare[-1].last != client:
                return spare.pop()
        # non-blocking from the start: no fcntl
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        try:
            sock.bind((self.host, 0))
        except OSError:
            sock.close()
            raise
        channel = _Channel(sock)
        self.loop.add_reader(sock.fileno(), self._on_datagram, channel)
        return channel

    def _release(self, channel: _Channel, client: Client) -> None:
        """CHANNEL's transfer (CLIENT's) is over: keep it for the next one, or close it."""
        channel.slot, channel.transfer, channel.last = None, None, client
        if len(self.spare) < self.limits.spare_sockets:
            self.spare.append(channel)
        else:
            self._close_channel(channel)

    def _close_channel(self, channel: _Channel) -> None:
        self.loop.remove_reader(channel.sock.fileno())
        channel.sock.close()

    def _forget(self, slot: _Slot) -> None:
        """SLOT no longer counts against the limits."""
        if self.slots.get(slot.client) is slot:
            del self.slots[slot.client]
            address = slot.client[0]
            left = self.per_address[address] - 1
            if left:
                self.per_address[address] = left
            else:
                del self.per_address[address]

    def _drop_unopened(self, slot: _Slot, refusal: Refusal) -> None:
        slot.ended = True
        self._forget(slot)
        self._refuse(slot.client, slot.name, refusal)

    def _on_datagram(self, channel: _Channel) -> None:
        # One datagram per call: a client sends one ACK per window, so a second read would
        # almost always find nothing (a failed syscall and an exception per block); the
        # loop calls again while the socket has more.
        sock = channel.sock
        try:
            data, source = sock.recvfrom(REPLY)  # not 64 KiB allocated and cut per ACK
        except OSError:
            return
        slot, transfer = channel.slot, channel.transfer
        if slot is None or transfer is None:  # a late datagram of an ended transfer: as to
            return  # a closed port
        if source != slot.client:  # RFC 1350: no effect on the transfer
            self._send(sock, error_packet(UNKNOWN_TID, "unknown transfer ID"), source)
            return
        try:
            packets = transfer.receive(data, _clock())
        except OSError as exc:  # the file could not be read
            self._read_error(slot, sock, exc)
            return
        if packets:
            if len(packets) == 1:  # lockstep, inline: suppress() costs a context per block
                try:  # noqa: SIM105
                    sock.sendto(packets[0], source)
                except OSError:  # a full buffer, an ICMP report: the timer resends
                    pass
            else:
                self._send_window(slot, sock, packets)
        if transfer.done:
            self._end(slot, transfer.error)

    def _step(
        self, slot: _Slot, sock: socket.socket, transfer: Transfer, packets: list[bytes] | None
    ) -> None:
        """Send PACKETS, SLOT's transfer's datagrams, and end it if it is done."""
        if packets:
            self._send_window(slot, sock, packets)
        if transfer.done:
            self._end(slot, transfer.error)

    def _send_window(self, slot: _Slot, sock: socket.socket, packets: list[bytes]) -> None:
        """Send PACKETS (blocks of one size but maybe the last, or one OACK or ERROR): with
        GSO in as few sends as it allows, else one by one; stops at a full buffer."""
        client, gso = slot.client, slot.gso
        if gso is not None and len(packets) > 1:
            ancillary, per_send = gso
            for first in range(0, len(packets), per_send):
                chunk = packets[first : first + per_send]
                try:
                    sock.sendmsg([b"".join(chunk)], ancillary, 0, client)
                except (BlockingIOError, InterruptedError):
                    return  # the socket's buffer is full: the timer resends
                except OSError as exc:
                    if exc.errno not in GSO_UNSUPPORTED:
                        return  # unreachable, an ICMP report: the timer decides
                    slot.gso = None  # this kernel or device cannot: one by one from now on
                    self._send_window(slot, sock, packets[first:])
                    return
            return
        for packet in packets:
            if not self._send(sock, packet, client):
                break  # the socket's buffer is full: the timer resends

    def _read_error(self, slot: _Slot, sock: socket.socket, exc: OSError) -> None:
        self._send(sock, error_packet(NOT_DEFINED, "read error"), slot.client)
        self._end(slot, f"read error: {exc.strerror or exc}")

    def _tick(self) -> None:
        now = self.loop.time()
        stalled = []
        for slot in list(self.slots.values()):
            sock, transfer = slot.sock, slot.transfer
            if sock is None or transfer is None or slot.ended:
                continue
            if now >= transfer.deadline:
                try:
                    packets = transfer.expire(now)
                except OSError as exc:
                    self._read_error(slot, sock, exc)
                    continue
                self._step(slot, sock, transfer, packets)
            if transfer.tries and not slot.ended:
                stalled.append(slot)
        stalled.sort(key=_Slot.waiting_since, reverse=True)  # the longest waiting last
        self.stalled = stalled
        if self.unanswered and now - self.unanswered_logged >= UNANSWERED_LOG:
            _line(
                "tftp: %d requests left unanswered: %d transfers running, none has missed "
                "an ACK (their clients ask again)",
                self.unanswered,
                len(self.slots),
            )
            self.unanswered, self.unanswered_logged = 0, now

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
                _line("tftp %s:%d %s: refused (%s), unsent: %s", *client, name, refusal.reason, exc)
                return
        _line("tftp %s:%d %s: refused (%s)", *client, name, refusal.reason)

    def _end(self, slot: _Slot, error: str | None) -> None:
        if slot.ended:
            return
        slot.ended = True
        self._forget(slot)
        if slot.channel is not None:
            self._release(slot.channel, slot.client)
        transfer = slot.transfer
        if transfer is not None:
            transfer.source.close()
        if error is None and transfer is not None:
            seconds = self.loop.time() - slot.started
            _line(
                "tftp %s:%d %s: %d bytes in %.2fs",
                *slot.client,
                slot.name,
                transfer.delivered,
                seconds,
            )
        else:
            _line("tftp %s:%d %s: failed (%s)", *slot.client, slot.name, error)

    # -- the opener's thread ---------------------------------------------------------------

    def _open(self, relative: str, client: Client, ask: bool = True) -> Source:
        """resolve() first (unless not ASK: resolve_now said there is no dynamic file), then
        the tree; Refusal for anything that cannot be served."""
        try:
            content = self.resolve(relative, client) if ask else None
        except Refusal:  # resolve()'s own (the registry unavailable): logged with the transfer
            raise
        except Exception:
            log.exception("tftp resolve failed for %s", loggable(relative))
            raise Refusal(NOT_DEFINED, "server error", "resolve failed") from None
        if content is not None:
            return MemorySource(content)
        return open_file(self.root, relative, self.cache)


class FileCache:
    """Files' contents held in memory, least recently served dropped first: at most FILES
    of them and BYTES in all. An entry is valid while the file's path, device, inode, size
    and modification time are those it was read with."""

    def __init__(self, files: int, size: int) -> None:
        self.files, self.bytes = files, size
        self._entries: OrderedDict[str, tuple[tuple[int, ...], bytes]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Bytes held."""
        return self._held

    def __len__(self) -> int:
        return len(self._entries)

    def source(self, path: str, fd: int) -> Source:
        """The content of FD (open at PATH) to serve; FD is closed or kept by the source.
        A file bigger than the cache, or one that changes while it is read, is served from
        FD by pread."""
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None and entry[0] == key:
                self._entries.move_to_end(path)
                os.close(fd)
                return MemorySource(entry[1])
        if info.st_size > self.bytes:
            return FileSource(fd)
        content = _read_all(fd, info.st_size)
        after = os.fstat(fd)
        if content is None or key != (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns):
            return FileSource(fd)  # it changed while read: per block, as it is now
        os.close(fd)
        with self._lock:
            old = self._entries.pop(path, None)
            if old is not None:
                self._held -= len(old[1])
            self._entries[path] = (key, content)
            self._held += len(content)
            while len(self._entries) > self.files or self._held > self.bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._held -= len(dropped)
        return MemorySource(content)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._held = 0


def _read_all(fd: int, size: int) -> bytes | None:
    """SIZE bytes of FD from its start, or None if it has fewer."""
    parts, offset = [], 0
    while offset < size:
        part = os.pread(fd, min(size - offset, 16 * 1024 * 1024), offset)
        if not part:
            return None
        parts.append(part)
        offset += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def open_file(root: Path, relative: str, cache: FileCache | None = None) -> Source:
    """RELATIVE under ROOT, open for reading (from CACHE when it holds it); Refusal (one
    sentence for the log) if it escapes, is missing, is no regular file or cannot be read
    (a symlink loop, a FIFO)."""
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
    if cache is None:
        return FileSource(fd)
    try:
        return cache.source(relative, fd)
    except OSError as exc:
        os.close(fd)  # raised before the source took it
        reason = exc.strerror or type(exc).__name__
        raise Refusal(ACCESS_VIOLATION, "access violation", f"cannot read it: {reason}") from None


def _close_result(done: Future[Source]) -> None:
    if not done.cancelled() and done.exception() is None:
        done.result().close()
