"""Progress events queued for one transaction (``Registry.queue_progress``): the queue
and its one flusher thread. The registry applies what it takes (``Registry._write``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("netinstall.registry")


PROGRESS_BATCH = 256  # progress events queued at most; the reporter that fills it flushes
PROGRESS_DELAY = 0.05  # seconds a queued progress event waits at most before it is committed
# The flusher looks at the queue every PROGRESS_DELAY while progress comes (no wake-up
# from the reporter, the event loop, per batch); after this many looks in a row found
# nothing it sleeps until the next event wakes it.
PROGRESS_IDLE_LOOKS = 20


@dataclass(frozen=True)
class Progress:
    """A progress event (``installing`` again: its step, its percent) not yet committed."""

    mac: str
    step: str | None
    progress: float | None
    message: str | None
    time: float = field(default_factory=time.time)


class ProgressQueue:
    """Progress events waiting for one transaction: at most ``batch`` of them, each at
    most ``delay`` seconds (one flusher thread, started at the first event and kept,
    commits them with ``flush``); the registry commits them before any other write and
    when it closes. Only progress is queued: a report that changes a host's state is
    committed before its reply.

    One thread for the queue's life, not a timer thread per batch: starting a thread
    costs the reporter's thread (the event loop) a hand-off and a wait for it to run,
    twenty times a second under a steady stream of progress. And while progress comes
    the flusher looks every ``delay`` by itself: the reporter wakes it only after
    ``PROGRESS_IDLE_LOOKS`` empty looks (a wake-up is a system call made with the GIL
    held, which on a busy machine often hands the core to the woken thread)."""

    def __init__(
        self,
        flush: Callable[[], None],
        batch: int = PROGRESS_BATCH,
        delay: float = PROGRESS_DELAY,
    ) -> None:
        self.batch, self.delay = batch, delay
        self._flush = flush
        self._events: list[Progress] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flusher: threading.Thread | None = None
        self._asleep = False  # the flusher waits for put() to wake it
        self._stopped = False

    def __len__(self) -> int:
        return len(self._events)

    def put(self, event: Progress) -> bool:
        """Queue ``event``; True when the queue is full (the caller flushes it now)."""
        with self._lock:
            self._events.append(event)
            if len(self._events) == 1 and not self._stopped:
                if self._flusher is None:
                    self._flusher = threading.Thread(
                        target=self._run, name="registry-progress", daemon=True
                    )
                    self._flusher.start()
                elif self._asleep:  # else it looks again within `delay` by itself
                    self._wake.notify()
            return len(self._events) >= self.batch

    def take(self) -> list[Progress]:
        with self._lock:
            events, self._events = self._events, []
            return events

    def give_back(self, events: list[Progress]) -> None:
        """``events`` taken but not committed, first again (before any queued since)."""
        with self._lock:
            self._events[:0] = events

    def _run(self) -> None:
        """The flusher: wait for an event, give it ``delay`` seconds, commit the queue."""
        idle = 0  # looks in a row that found nothing
        while True:
            with self._lock:
                if not self._events and idle >= PROGRESS_IDLE_LOOKS:
                    self._asleep = True  # until put() wakes it
                    while not self._events and not self._stopped:
                        self._wake.wait()
                    self._asleep, idle = False, 0
                if self._stopped:
                    return
                self._wake.wait(self.delay)  # stop() cuts it short
                if self._stopped:
                    return
                if not self._events:
                    idle += 1
                    continue
                idle = 0
            try:
                self._flush()
            except Exception:  # this thread has no caller to tell; the next write retries
                log.exception("committing %d queued progress events", len(self._events))

    def stop(self) -> None:
        """No more flushes by the flusher (the registry closes and commits what is queued
        itself); its thread ends."""
        with self._lock:
            self._stopped, flusher = True, self._flusher
            self._wake.notify_all()
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=10)
