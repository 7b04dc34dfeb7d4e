"""installer_core.report: the enrolment (the install token's one use), event bodies and
headers per docs/protocol.md; an unreachable server never fails the install; a refused
key stops it; neither token nor key reaches a log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import requests

from common.protocol.codec import decode
from common.protocol.messages import Event, State
from installer_core.report import KeyRefused, NullReporter, ServerReporter, event_body
from tests.unit.test_installer_fakes import TOKEN, FakeResponse, FakeSession

MAC = "52:54:00:12:34:56"
EVENTS = "http://srv:8080/api/v1/hosts/52-54-00-12-34-56/events"
ENROL = EVENTS.replace("/events", "/enrol")


def reporter(session: FakeSession, mac: str | None = MAC, *, enrol: bool = True) -> ServerReporter:
    """A reporter; enrolled (its first call, then forgotten) unless ``enrol`` is false."""
    report = ServerReporter(
        "http://srv:8080/",
        mac,
        TOKEN,
        session,
        sleep=lambda _s: None,  # type: ignore[arg-type]
    )
    if enrol and mac is not None:
        report.enrol(requests.Session())
        assert session.calls.pop(0)[1] == ENROL
    return report


def test_the_token_enrols_the_installers_own_key_once() -> None:
    session = FakeSession(lambda *_: FakeResponse(200, b'{"enrolled": "new"}'))
    report = reporter(session, enrol=False)
    report.event("installing", step="network", progress=0.0)
    assert session.calls == []  # nothing but the enrolment goes out before it
    fetches = requests.Session()
    report.enrol(fetches)
    method, url, kwargs = session.calls[0]
    assert (method, url) == ("POST", ENROL)
    assert kwargs["headers"] == {"Authorization": f"Bearer {TOKEN}"}
    key = kwargs["json"]["key"]
    assert key == report.install_key
    assert len(key) >= 32
    assert key != TOKEN
    # the queued event follows, proving the key; the token is never sent again
    assert session.calls[1][1] == EVENTS
    assert session.calls[1][2]["headers"] == {"Authorization": f"Bearer {key}"}
    # the answer file's session proves the key to the server's address only
    ours = fetches.prepare_request(requests.Request("GET", f"http://srv:8080/answerfile/{MAC}"))
    elsewhere = fetches.prepare_request(requests.Request("GET", "http://mirror:8080/repo/x"))
    assert ours.headers["Authorization"] == f"Bearer {key}"
    assert "Authorization" not in elsewhere.headers
    report.enrol(requests.Session())
    assert len(session.calls) == 2  # enrolled once
    assert key not in repr(report)
    assert ServerReporter("http://srv:8080", MAC, TOKEN).install_key != key  # drawn per run


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"enrolled": "new", "update_key": "ssh-ed25519  AAAAC3 netinstall-updates"}',
         "ssh-ed25519 AAAAC3 netinstall-updates"),
        (b'{"enrolled": "new"}', None),  # a server from before updates
        (b'{"enrolled": "new", "update_key": "rm -rf /"}', None),
        (b"not json", None),
    ],
)  # fmt: skip
def test_the_enrolment_hands_out_the_servers_update_key(body: bytes, key: str | None) -> None:
    session = FakeSession(lambda *_: FakeResponse(200, body))
    report = reporter(session, enrol=False)
    report.enrol(requests.Session())
    assert report.update_key == key


@pytest.mark.parametrize("status", [401, 409])
def test_a_refused_enrolment_stops_the_install(status: int) -> None:
    session = FakeSession(lambda *_: FakeResponse(status, f"no {TOKEN}".encode()))
    report = reporter(session, enrol=False)
    with pytest.raises(KeyRefused, match=f"HTTP {status}") as refused:
        report.enrol(requests.Session())
    assert TOKEN not in str(refused.value)
    report.event("failed", step="fetch-answerfile")  # nothing more is sent, nothing raised
    assert len(session.calls) == 1


def test_events_are_posted_with_the_bearer_token() -> None:
    session = FakeSession(lambda *_: FakeResponse(200, b"{}"))
    report = reporter(session)
    report.event("installing", step="partition", progress=0.35)
    report.event("failed", step="download", message="sha256 mismatch for boot/xen.gz")
    report.event(State.INSTALLED)
    assert [(m, u) for m, u, _ in session.calls] == [("POST", EVENTS)] * 3
    bodies = [kwargs["json"] for _m, _u, kwargs in session.calls]
    assert bodies == [
        {"protocol": 2, "state": "installing", "step": "partition", "progress": 0.35},
        {"protocol": 2, "state": "failed", "step": "download",
         "message": "sha256 mismatch for boot/xen.gz"},
        {"protocol": 2, "state": "installed"},
    ]  # fmt: skip
    # What the server makes of them: the same declaration, decoded.
    assert decode(Event, bodies[0]) == Event(State.INSTALLING, step="partition", progress=0.35)
    assert session.calls[0][2]["headers"] == {"Authorization": f"Bearer {report.install_key}"}
    assert TOKEN not in repr(report)


def test_an_unreachable_server_is_retried_logged_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url_with_token = f"http://srv:8080/x?token={TOKEN}"
    down = {"now": False}

    def handle(*_: object) -> FakeResponse | Exception:
        if down["now"]:
            return requests.ConnectionError(f"refused {url_with_token}")
        return FakeResponse(200, b"{}")

    session = FakeSession(handle)
    report = reporter(session)
    down["now"] = True
    report.event("installing", step="network", progress=0.0)
    assert len(session.calls) == 3
    assert "wait for the server" in caplog.text
    assert TOKEN not in caplog.text


def test_waiting_events_go_out_in_order_once_the_server_answers() -> None:
    up = {"now": False}

    def handle(*_: object) -> FakeResponse | Exception:
        return FakeResponse(200, b"{}") if up["now"] else requests.ConnectionError("down")

    session = FakeSession(handle)
    up["now"] = True
    report = reporter(session)
    up["now"] = False
    report.event("installing", step="network", progress=0.0)
    up["now"] = True
    report.event("installing", step="fetch-answerfile", progress=0.05)
    sent = [kw["json"]["step"] for _m, _u, kw in session.calls if "json" in kw][-2:]
    assert sent == ["network", "fetch-answerfile"]


def test_events_wait_for_the_mac_when_there_was_no_bootif() -> None:
    session = FakeSession(lambda *_: FakeResponse(200, b"{}"))
    report = reporter(session, mac=None)
    report.event("installing", step="network", progress=0.0)
    assert session.calls == []
    report.mac = MAC
    report.flush()
    assert session.calls == []  # not before the enrolment
    report.enrol(requests.Session())
    assert [u for _m, u, _ in session.calls] == [ENROL, EVENTS]


def test_a_refusal_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession(lambda *_: FakeResponse(200, b"{}"))
    report = reporter(session)
    session.handler = lambda *_: FakeResponse(409, f"bad state {TOKEN}".encode())
    report.event("installed")
    report.event("installed")
    assert len(session.calls) == 2  # not retried, not kept
    assert "HTTP 409" in caplog.text
    assert TOKEN not in caplog.text


def test_a_retired_key_stops_the_install_once(caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession(lambda *_: FakeResponse(200, b"{}"))
    report = reporter(session)
    session.handler = lambda *_: FakeResponse(401, b"wrong or retired install key")
    with pytest.raises(KeyRefused, match="HTTP 401"):
        report.event("installing", step="partition")
    report.event("failed", step="partition")  # after that: nothing sent, nothing raised
    report.upload_logs(Path("/nonexistent"))
    assert len(session.calls) == 1
    assert report.install_key not in caplog.text


def test_the_log_bundle_is_put(tmp_path: Path) -> None:
    bundle = tmp_path / "support.tar.bz2"
    bundle.write_bytes(b"BZh9...")
    session = FakeSession(lambda *_: FakeResponse(201, b"{}"))
    report = reporter(session)
    report.upload_logs(bundle)
    method, url, kwargs = session.calls[0]
    assert (method, url) == ("PUT", EVENTS.replace("/events", "/logs"))
    assert kwargs["data"] == b"BZh9..."
    assert kwargs["headers"]["Authorization"] == f"Bearer {report.install_key}"


def test_progress_is_clamped_and_an_unknown_state_is_a_bug() -> None:
    assert event_body("installing", None, 1.5, None)["progress"] == 1.0
    assert event_body("installing", None, -0.1, None)["progress"] == 0.0
    with pytest.raises(ValueError, match="bogus"):
        event_body("bogus", None, None, None)


def test_the_null_reporter_does_nothing(tmp_path: Path) -> None:
    NullReporter().event("installing", step="x", progress=0.5)
    NullReporter().upload_logs(tmp_path / "none")
