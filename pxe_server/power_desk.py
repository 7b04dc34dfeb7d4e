"""The power desk of every ``server run``: its heartbeat, the segment servers it learnt,
and the power requests other servers left for it (``pxe_server.segments``).

    desk = PowerDesk(registry, name, address); desk.start() ... desk.stop()

One thread of its own (never the event loop's). It registers the server in ``servers``
at start and renews its ``last_seen`` every ``HEARTBEAT`` seconds; every ``DESK_POLL``
seconds it writes the segment servers its ``SegmentLearner`` noted and, on a shared
registry (PostgreSQL), looks for power requests left for it: each is carried out here
(``bmc_control.power_here``, the BMC asked from this server's segment) on a worker
thread, and answered in the registry for the server that waits for it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from common.errors import InputError
from common.protocol.codec import decode
from common.protocol.messages import PowerReply, PowerRequest
from pxe_server import bmc_control
from pxe_server.registry import Registry
from pxe_server.registry_segments import PowerAsk
from pxe_server.segments import (
    ANSWER_WAIT,
    DESK_POLL,
    HEARTBEAT,
    SegmentLearner,
    answer_of,
)

log = logging.getLogger("netinstall.segments")

DESK_WORKERS = 4  # power requests carried out at once (each waits on a BMC)
OUTAGE_LOG_EVERY = 60.0  # seconds between the desk's log lines while the registry fails


class PowerDesk:
    """A server's heartbeat, learning and power requests, on a thread of its own."""

    def __init__(
        self,
        registry: Registry,
        name: str,
        address: str,
        *,
        poll: float = DESK_POLL,
        beat: float = HEARTBEAT,
        clock: Callable[[], float] = time.time,
        requests: bool | None = None,
    ) -> None:
        self.registry, self.name, self.address = registry, name, address
        self.poll, self.beat, self.clock = poll, beat, clock
        # Whether it looks for power requests: on a shared registry (PostgreSQL) only, unless
        # told (a test of the round trip on SQLite).
        self.requests = registry.networked if requests is None else requests
        self.learner = SegmentLearner(name)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers = ThreadPoolExecutor(DESK_WORKERS, thread_name_prefix="power-desk")
        self._busy = threading.Semaphore(DESK_WORKERS)

    def start(self) -> None:
        """Register this server, learn what it serves from now on, and start the thread."""
        self.registry.register_server(self.name, self.address, self.clock())
        self.registry.segment_learner = self.learner
        log.info("server %s registered (%s)", self.name, self.address)
        self._thread = threading.Thread(target=self._loop, name="power-desk", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.registry.segment_learner = None
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._workers.shutdown(wait=True, cancel_futures=False)

    def _loop(self) -> None:
        next_beat = time.monotonic() + self.beat
        quiet_until = -math.inf  # an outage is logged once a minute, not every poll
        while not self._stopping.wait(self.poll):
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.beat
                    if not self.registry.server_seen(self.name, self.clock()):
                        self.registry.register_server(self.name, self.address, self.clock())
                self.learner.flush(self.registry)
                if self.requests:
                    self.take_requests()
            except Exception:  # the database unreachable, say: look again later
                if time.monotonic() >= quiet_until:
                    quiet_until = time.monotonic() + OUTAGE_LOG_EVERY
                    log.exception("power desk of server %s (said once a minute)", self.name)

    def take_requests(self) -> int:
        """Claim the power requests waiting for this server (as many as workers are free)
        and carry each out on a worker; how many were taken."""
        taken = 0
        while self.registry.power_waiting(self.name) and self._busy.acquire(blocking=False):
            ask = self.registry.claim_power(self.name, self.clock(), ANSWER_WAIT)
            if ask is None:
                self._busy.release()
                break
            self._workers.submit(self._carry_out, ask)
            taken += 1
        return taken

    def _carry_out(self, ask: PowerAsk) -> None:
        try:
            reply: PowerReply | None = None
            error: Exception | None = None
            try:
                request = decode(PowerRequest, ask.request)
                reply = bmc_control.power_here(self.registry, ask.mac, request)
            except InputError as exc:  # a refusal (the BMC's, say): back to the asking server
                error = exc
            except Exception as exc:
                log.exception("power request %d for %s", ask.id, ask.mac)
                error = exc
            log.info("power request %d from %s for host %s: %s", ask.id, ask.asked_by, ask.mac,
                     "answered" if error is None else f"refused: {error}")  # fmt: skip
            self.registry.answer_power(ask.id, answer_of(reply, error), self.clock())
        except Exception:
            log.exception("power request %d: its answer could not be written", ask.id)
        finally:
            self._busy.release()
