"""``netinstall host watch``: installs followed live, whether the fleet is here or behind
the API (``netinstall.fleet.Fleet``).

Watching only reads: every ``interval`` seconds one ``Fleet.hosts()`` (each host with its
latest event, one request over the API), compared with what was seen before; a host
whose state, step, whole percent or latest message changed is handed to the view
(``netinstall.watch_view``: rich bars on a terminal, plain lines or JSON lines
otherwise). The watch ends when every watched host is running or failed, or at its time
limit; Ctrl-C stops the watching, never the installs. ``pool upgrade`` shows the same
board while it follows its job (``Board.look``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from common.errors import InputError, NetinstallError
from common.protocol.messages import HostRecord, State
from pxe_server.model import normalise_mac

DEFAULT_INTERVAL = 2.0  # seconds between looks
MIN_INTERVAL, MAX_INTERVAL = 0.2, 60.0
DEFAULT_TIMEOUT = 7200.0  # seconds: two hours, longer than any install of the lab's
MAX_TIMEOUT = 7 * 86400.0
MAX_MISSES = 5  # looks in a row the fleet may fail (a server restarting) before the watch ends
REMOVED = "removed from the registry"  # the message of a host that went while watched
DONE = (State.RUNNING, State.FAILED)


@dataclass(frozen=True)
class HostView:
    """What the watch shows of one host: its state, step, progress and latest message."""

    mac: str
    name: str | None
    state: State
    step: str | None
    progress: float | None  # as the installer reported it, 0 to 1
    message: str | None  # its latest event's

    @classmethod
    def of(cls, record: HostRecord) -> HostView:
        event = record.last_event
        message = event.message if event is not None else None
        return cls(record.mac, record.name, record.state, record.step, record.progress, message)

    @property
    def label(self) -> str:
        return f"{self.mac} ({self.name})" if self.name else self.mac

    @property
    def done(self) -> bool:
        return self.state in DONE

    @property
    def fraction(self) -> float:
        """How far along, 0 to 1, for a bar: the installer's progress while installing;
        all of it once installed (first boot) or running; none before."""
        if self.state in (State.INSTALLED, State.RUNNING):
            return 1.0
        if self.state in (State.INSTALLING, State.FAILED) and self.progress is not None:
            return min(max(self.progress, 0.0), 1.0)
        return 0.0

    @property
    def percent(self) -> int | None:
        return None if self.progress is None else round(self.fraction * 100)

    @property
    def phase(self) -> str:
        """``installing partition``: the state and the step."""
        return f"{self.state.value} {self.step}" if self.step else self.state.value

    @property
    def status(self) -> str:
        """``installing partition 35%``: the phase and the percent where known."""
        if self.state is State.INSTALLING and self.percent is not None:
            return f"{self.phase} {self.percent}%"
        return self.phase

    def differs(self, other: HostView) -> bool:
        """Whether ``other`` is a change worth a line: the state, the step, the whole
        percent or the latest message (not every fraction of a percent)."""
        mine = (self.state, self.step, self.percent, self.message)
        return mine != (other.state, other.step, other.percent, other.message)


class View(Protocol):
    """Where the board's changes go (``netinstall.watch_view``)."""

    def change(self, host: HostView, elapsed: float) -> None: ...  # also each host at first

    def close(self) -> None: ...


@dataclass
class Board:
    """The watched hosts as last seen; ``look`` hands the view what changed since."""

    view: View
    macs: tuple[str, ...]
    # Whether a host that runs or failed is still looked at: a watch stops there, a pool
    # upgrade's hosts run before their upgrade starts.
    keep_looking: bool = False
    seen: dict[str, HostView] = field(default_factory=dict)

    def look(self, records: Mapping[str, HostRecord], elapsed: float) -> None:
        for mac in self.macs:
            before = self.seen.get(mac)
            if before is not None and before.done and not self.keep_looking:
                continue
            record = records.get(mac)
            if record is None:
                name, step = (None, None) if before is None else (before.name, before.step)
                now = HostView(mac, name, State.FAILED, step, None, REMOVED)
            else:
                now = HostView.of(record)
            if before is None or before.differs(now):
                self.view.change(now, elapsed)
            self.seen[mac] = now

    @property
    def finished(self) -> bool:
        return all(mac in self.seen and self.seen[mac].done for mac in self.macs)

    def failed(self) -> list[HostView]:
        return [
            self.seen[m] for m in self.macs if m in self.seen and self.seen[m].state is State.FAILED
        ]

    def waiting(self) -> list[HostView]:
        return [self.seen[m] for m in self.macs if m in self.seen and not self.seen[m].done]


@dataclass(frozen=True)
class Selection:
    """The hosts a watch follows and one sentence saying which."""

    macs: tuple[str, ...]
    said: str


def select(records: Iterable[HostRecord], given: Sequence[str]) -> Selection:
    """The MACs given (InputError for one that is not a MAC or not a host), else every
    host that is neither running nor failed (a failed one waits for the operator: it is
    watched when named)."""
    known = {r.mac: r for r in records}
    if given:
        macs = tuple(dict.fromkeys(normalise_mac(m) for m in given))
        missing = [m for m in macs if m not in known]
        if missing:
            raise InputError(f"no host {', '.join(missing)} in the registry (see `host list`)")
        return Selection(macs, f"watching {_hosts(len(macs))}")
    macs = tuple(mac for mac, r in sorted(known.items()) if r.state not in DONE)
    failed = sum(1 for r in known.values() if r.state is State.FAILED)
    said = f"watching {_hosts(len(macs))} not running yet"
    if failed:
        said += f" ({_hosts(failed)} failed left out: name a MAC to watch it)"
    return Selection(macs, said)


def _hosts(count: int) -> str:
    return f"{count} host" if count == 1 else f"{count} hosts"


@dataclass(frozen=True)
class Outcome:
    """How a watch ended: every host running, some failed, or the time limit reached."""

    failed: tuple[HostView, ...]
    waiting: tuple[HostView, ...]  # not done at the time limit

    @property
    def exit_code(self) -> int:
        return 0 if not self.failed and not self.waiting else 1

    def sentence(self, timeout: float) -> str:
        if self.failed:
            named = "; ".join(f"{h.label}: {h.message or h.status}" for h in self.failed)
            return f"{_hosts(len(self.failed))} failed: {named}"
        if self.waiting:
            named = ", ".join(f"{h.label} ({h.status})" for h in self.waiting)
            return f"not every host is running after {timeout:g} s: {named}"
        return "every watched host is running"


def seconds(option: str, text: str, low: float, high: float) -> float:
    """``text`` as seconds from ``low`` to ``high`` (InputError naming ``option``)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not low <= value <= high:
        raise InputError(f"{option} {text!r} must be a number of seconds from {low:g} to {high:g}")
    return value


def watch(
    hosts: Callable[[], list[HostRecord]],
    macs: tuple[str, ...],
    view: View,
    *,
    interval: float = DEFAULT_INTERVAL,
    timeout: float = DEFAULT_TIMEOUT,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    warn: Callable[[str], None] = lambda line: None,
) -> Outcome:
    """Look at ``macs`` every ``interval`` seconds until each is running or failed, or
    ``timeout`` seconds passed; the view is closed however it ends (Ctrl-C included).

    A look that fails (the server restarting, the registry busy: not a refusal, which is
    the operator's to fix) is said through ``warn`` and tried again at the next one;
    ``MAX_MISSES`` in a row end the watch with the last failure."""
    pause = time.sleep if sleep is None else sleep
    began = clock()
    board = Board(view, macs)
    misses = 0
    try:
        while True:
            elapsed = clock() - began
            try:
                found = hosts()
            except InputError:
                raise
            except NetinstallError as exc:
                misses += 1
                if misses >= MAX_MISSES:
                    raise
                warn(f"no look at the hosts ({exc}); trying again in {interval:g} s")
            else:
                misses = 0
                board.look({r.mac: r for r in found}, elapsed)
            if board.finished:
                return Outcome(tuple(board.failed()), ())
            if elapsed >= timeout:
                return Outcome(tuple(board.failed()), tuple(board.waiting()))
            pause(min(interval, max(timeout - elapsed, 0.0)))
    finally:
        view.close()


class WatchFailed(NetinstallError):
    """A watched host failed, or the time limit came first (exit 1)."""
