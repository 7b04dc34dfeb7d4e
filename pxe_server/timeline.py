"""A host's install as phases on a time line, from its events alone (the web console).

    phases(events, now)  -> [Phase(state, step, start, end, finished, message), ...]
    latest_run(events)   -> the events of the host's latest work (from its last ``pending``)
    bars(phases)         -> each phase's place and width on a scale of 0..100

A phase starts at each event whose (state, step) differs from the one before it; it
lasts until the next phase starts, or until ``now`` while it is the last and the host is
still on its way (a host that failed or runs its system has arrived: its last phase is a
moment). What the server hears is all there is to draw: the boot config fetched, the
answer file fetched, each installer step, installed, the first boot, running; a milestone
the installer or the first boot reports later as an event simply becomes a phase.
Pure: no I/O, no clock (``now`` is given).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pxe_server.model import Event, State

# States after which nothing more is expected: the last phase ends where it starts.
_ARRIVED = (State.RUNNING, State.FAILED)


@dataclass(frozen=True)
class Phase:
    """One stretch of an install in one (state, step)."""

    state: State
    step: str | None
    start: float  # seconds since the epoch
    end: float
    finished: bool  # False: the host is still in it (its end is ``now``)
    message: str | None  # what the phase's first event said

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def label(self) -> str:
        return self.state.value if self.step is None else f"{self.state.value}: {self.step}"


@dataclass(frozen=True)
class Bar:
    """A phase drawn to scale: where it starts and how wide it is, in percent of the run."""

    phase: Phase
    x: float
    width: float


def latest_run(events: Sequence[Event]) -> list[Event]:
    """The events from the host's latest ``pending`` on (new work starts there: a rearm,
    an upgrade or a restore); all of them if it has none. Oldest first, as given."""
    start = 0
    for index, event in enumerate(events):
        if event.state is State.PENDING:
            start = index
    return list(events[start:])


def phases(events: Sequence[Event], now: float) -> list[Phase]:
    """``events`` (oldest first) as phases; the last one unfinished unless the host
    arrived (``running`` or ``failed``)."""
    starts: list[Event] = []
    for event in events:
        if not starts or (event.state, event.step) != (starts[-1].state, starts[-1].step):
            starts.append(event)
    found = []
    for index, event in enumerate(starts):
        last = index == len(starts) - 1
        if not last:
            end, finished = starts[index + 1].time, True
        elif event.state in _ARRIVED:
            end, finished = event.time, True
        else:
            end, finished = max(now, event.time), False
        found.append(Phase(event.state, event.step, event.time, end, finished, event.message))
    return found


# The narrowest bar drawn (percent), so that a phase of a moment is still seen.
MIN_WIDTH = 0.6


def bars(found: Sequence[Phase]) -> list[Bar]:
    """Each phase's start and width in percent of the whole run (first start to last end);
    a run of no length at all draws its phases side by side, alike."""
    if not found:
        return []
    first, last = found[0].start, max(p.end for p in found)
    span = last - first
    if span <= 0:
        width = 100.0 / len(found)
        return [Bar(p, i * width, width) for i, p in enumerate(found)]
    drawn = []
    for phase in found:
        width = max(MIN_WIDTH, phase.duration / span * 100.0)
        x = min((phase.start - first) / span * 100.0, 100.0 - width)  # a moment at the end
        drawn.append(Bar(phase, round(x, 3), round(width, 3)))
    return drawn


def duration_text(seconds: float) -> str:
    """``seconds`` for people: ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
