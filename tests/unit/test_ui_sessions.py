"""The web console's sessions and login throttle (pxe_server/ui_sessions.py)."""

from __future__ import annotations

from pxe_server.ui_sessions import ABSOLUTE, IDLE, LoginThrottle, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_id_is_random_256_bits_and_kept_only_as_a_digest() -> None:
    sessions = Sessions()
    first, session = sessions.create()
    second, _ = sessions.create()
    assert first != second
    assert len(first) == 43  # 32 bytes, URL-safe base64
    assert len(session.csrf) == 43
    assert session.csrf != first
    assert first not in repr(vars(sessions))
    assert sessions.get(first) is session


def test_unknown_empty_and_overlong_ids_find_nothing() -> None:
    sessions = Sessions()
    sessions.create()
    assert sessions.get(None) is None
    assert sessions.get("") is None
    assert sessions.get("x" * 43) is None
    assert sessions.get("x" * 10_000) is None


def test_a_session_ends_when_idle_and_at_its_absolute_limit() -> None:
    clock = Clock()
    sessions = Sessions(clock=clock)
    idle, _ = sessions.create()
    clock.now += IDLE - 1
    assert sessions.get(idle) is not None  # used: its idle time starts again
    clock.now += IDLE - 1
    assert sessions.get(idle) is not None
    clock.now += IDLE + 1
    assert sessions.get(idle) is None
    busy, _ = sessions.create()
    for _ in range(ABSOLUTE // (IDLE // 2)):
        clock.now += IDLE // 2
        sessions.get(busy)
    clock.now += IDLE // 2
    assert sessions.get(busy) is None  # used all along, but 12 hours are up


def test_sessions_are_bounded_the_oldest_ending_first() -> None:
    sessions = Sessions(most=3)
    ids = [sessions.create()[0] for _ in range(5)]
    assert len(sessions) == 3
    assert [sessions.get(i) is not None for i in ids] == [False, False, True, True, True]


def test_logout_ends_the_session() -> None:
    sessions = Sessions()
    session_id, _ = sessions.create()
    sessions.end(session_id)
    sessions.end(None)
    assert sessions.get(session_id) is None


def test_the_csrf_token_must_match_exactly() -> None:
    _, session = Sessions().create()
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(None)
    assert not session.csrf_matches("")
    assert not session.csrf_matches(session.csrf[:-1])


def test_failed_logins_make_an_address_wait_until_the_window_passes() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, most=3, window=60)
    for _ in range(3):
        assert throttle.wait("192.0.2.1") == 0
        throttle.failed("192.0.2.1")
        clock.now += 1
    assert throttle.wait("192.0.2.1") == 57  # the first failure leaves the window then
    assert throttle.wait("192.0.2.2") == 0  # another address is not held up
    clock.now += 57
    assert throttle.wait("192.0.2.1") == 0
    throttle.failed("192.0.2.1")
    throttle.succeeded("192.0.2.1")
    assert throttle.wait("192.0.2.1") == 0


def test_the_throttle_counts_a_bounded_number_of_addresses() -> None:
    throttle = LoginThrottle(most=1, addresses=10)
    for n in range(50):
        throttle.failed(f"192.0.2.{n}")
    assert throttle.wait("192.0.2.49") > 0
    assert throttle.wait("192.0.2.0") == 0  # dropped, the longest quiet first
    assert len(throttle._failures) == 10
