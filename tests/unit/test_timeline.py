"""A host's events as phases on a time line (pxe_server/timeline.py): pure."""

from __future__ import annotations

import pytest

from pxe_server.model import Event, State
from pxe_server.timeline import MIN_WIDTH, Phase, bars, duration_text, latest_run, phases

MAC = "52:54:00:12:34:56"


def event(time: float, state: State, step: str | None = None, message: str | None = None) -> Event:
    return Event(time, MAC, state, step, None, message)


INSTALL = [
    event(100, State.PENDING, message="added to the registry"),
    event(110, State.SIGNALLED, message="fetched its boot configuration"),
    event(130, State.INSTALLING, "partition"),
    event(131, State.INSTALLING, "partition"),  # progress within the step: no new phase
    event(150, State.INSTALLING, "copy"),
    event(250, State.INSTALLED),
    event(300, State.RUNNING, message="first boot"),
]


def test_a_phase_starts_where_state_or_step_changes_and_runs_to_the_next() -> None:
    found = phases(INSTALL, now=1000)
    assert [(p.state, p.step, p.start, p.end) for p in found] == [
        (State.PENDING, None, 100, 110),
        (State.SIGNALLED, None, 110, 130),
        (State.INSTALLING, "partition", 130, 150),
        (State.INSTALLING, "copy", 150, 250),
        (State.INSTALLED, None, 250, 300),
        (State.RUNNING, None, 300, 300),  # arrived: a moment, not until now
    ]
    assert all(p.finished for p in found)
    assert found[2].label == "installing: partition"
    assert found[1].message == "fetched its boot configuration"


def test_an_unfinished_phase_runs_until_now() -> None:
    found = phases(INSTALL[:5], now=400)
    assert found[-1] == Phase(State.INSTALLING, "copy", 150, 400, False, None)
    assert found[-1].duration == 250


def test_a_failed_host_has_arrived() -> None:
    found = phases([*INSTALL[:3], event(140, State.FAILED, message="disk full")], now=999)
    assert found[-1].end == 140
    assert found[-1].finished


def test_a_clock_behind_the_last_event_never_gives_a_negative_length() -> None:
    assert phases([event(500, State.INSTALLING, "copy")], now=400)[0].duration == 0


def test_no_events_no_phases() -> None:
    assert phases([], now=1) == []
    assert bars([]) == []


def test_the_latest_run_starts_at_the_last_pending() -> None:
    rearmed = [*INSTALL, event(400, State.PENDING, message="rearmed"), event(410, State.SIGNALLED)]
    assert latest_run(rearmed) == rearmed[-2:]
    assert latest_run(INSTALL) == INSTALL
    no_pending = INSTALL[1:]
    assert latest_run(no_pending) == no_pending


def test_bars_are_drawn_to_scale() -> None:
    drawn = bars(phases(INSTALL, now=1000))
    span = 300 - 100
    assert [b.x for b in drawn[:-1]] == [pytest.approx((p - 100) / span * 100) for p in
                                          (100, 110, 130, 150, 250)]  # fmt: skip
    assert drawn[3].width == pytest.approx(100 / span * 100)  # copy: 100 s of 200
    assert drawn[0].width == pytest.approx(5)
    assert drawn[-1].width == MIN_WIDTH  # a moment is still seen, at the very end
    assert drawn[-1].x + drawn[-1].width == pytest.approx(100)
    assert all(b.x + b.width <= 100.0 + 1e-9 for b in drawn)


def test_a_run_of_no_length_is_drawn_side_by_side() -> None:
    same = [event(5, State.SIGNALLED), event(5, State.FAILED)]
    drawn = bars(phases(same, now=5))
    assert [(b.x, b.width) for b in drawn] == [(0, 50), (50, 50)]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (42.4, "42 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")],
)
def test_durations_for_people(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
