"""The API client asks a GET again after a 503 (the server's database busy or away for a
moment), UNAVAILABLE_RETRIES times, after Retry-After (MAX_RETRY_AFTER at most); never
a request that may change something."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from common.protocol.messages import HostList
from netinstall import api_client
from netinstall.api_client import ApiClient, RemoteError, endpoint

UNAVAILABLE = {"protocol": 2, "error": "the registry's database is unavailable for a moment"}


class Script:
    """What the fake server answers, in turn: (status, Retry-After or None)."""

    def __init__(self, replies: list[tuple[int, str | None]]) -> None:
        self.replies = replies
        self.asked: list[str] = []


@pytest.fixture
def serving() -> Iterator[tuple[Script, ApiClient]]:
    script = Script([])

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            script.asked.append(self.command)
            status, retry_after = script.replies.pop(0) if script.replies else (200, None)
            body = UNAVAILABLE if status == 503 else {"protocol": 2, "hosts": []}
            data = json.dumps(body).encode()
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = ApiClient(endpoint(f"http://127.0.0.1:{server.server_address[1]}"), "t" * 32, None)
    try:
        yield script, client
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(api_client.time, "sleep", slept.append)
    return slept


def test_a_get_is_asked_again_after_503(
    serving: tuple[Script, ApiClient], waits: list[float]
) -> None:
    script, client = serving
    script.replies = [(503, "5"), (503, "3600")]
    assert client.call("GET", "hosts", HostList) == HostList(())
    assert script.asked == ["GET", "GET", "GET"]
    assert waits == [5.0, api_client.MAX_RETRY_AFTER]


def test_a_get_gives_up_after_its_retries(
    serving: tuple[Script, ApiClient], waits: list[float]
) -> None:
    script, client = serving
    script.replies = [(503, None)] * (api_client.UNAVAILABLE_RETRIES + 1)
    with pytest.raises(RemoteError, match="unavailable for a moment"):
        client.call("GET", "hosts", HostList)
    assert len(script.asked) == api_client.UNAVAILABLE_RETRIES + 1
    assert waits == [1.0] * api_client.UNAVAILABLE_RETRIES


def test_a_request_that_may_change_something_is_not_sent_again(
    serving: tuple[Script, ApiClient], waits: list[float]
) -> None:
    script, client = serving
    script.replies = [(503, "1")]
    with pytest.raises(RemoteError, match="unavailable for a moment"):
        client.call("POST", "hosts", HostList, body=HostList(()))
    assert script.asked == ["POST"]
    assert waits == []
