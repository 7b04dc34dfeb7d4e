"""Where the installer's progress goes (docs/protocol.md): the provisioning server or nowhere.

``ServerReporter`` posts ``SERVER/api/v1/hosts/<mac>/events`` (an ``Event``, declared
in ``common.protocol.messages`` with the server's side of it) and puts the log
bundle to ``.../logs`` with ``Authorization: Bearer <install token>``. The
server being unreachable never fails an install: an event that cannot be sent
after a few tries is logged and kept (a few at most) to go out before the next
one, so the events sent before the network was up arrive once it is. The token
is never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from answerfile.bootargs import redact_url
from common.protocol.codec import encode
from common.protocol.messages import Event, State

log = logging.getLogger(__name__)

MAX_PENDING = 20  # events kept while the server is unreachable; the oldest go first


class NullReporter:
    """No server: events only reach the install log."""

    def event(
        self,
        state: State | str,
        *,
        step: str | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> None:
        event = make_event(state, step, progress, message)
        log.debug("event %s step=%s progress=%s message=%s", event.state, step, progress, message)

    def upload_logs(self, bundle: Path) -> None:
        log.info("no netinstall.server=: the log bundle stays at %s", bundle)


def make_event(
    state: State | str, step: str | None, progress: float | None, message: str | None
) -> Event:
    """One event; ``state`` may be the enum's value (ValueError for anything else);
    ``progress`` is clamped to 0..1 and rounded."""
    if progress is not None:
        progress = round(min(1.0, max(0.0, progress)), 4)
    return Event(State(state), step=step, progress=progress, message=message)


def event_body(
    state: State | str, step: str | None, progress: float | None, message: str | None
) -> dict[str, Any]:
    """The JSON body of one event (``protocol`` first); absent fields are left out."""
    return encode(make_event(state, step, progress, message))


class ServerReporter:
    """Reports to ``server`` as the host ``mac`` (set later when the boot NIC was unknown)."""

    def __init__(
        self,
        server: str,
        mac: str | None,
        token: str,
        session: requests.Session | None = None,
        *,
        attempts: int = 3,
        backoff: float = 0.5,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = server.rstrip("/")
        self.mac = mac
        self._token = token
        self._session = session or requests.Session()
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._sleep = sleep
        self._pending: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"ServerReporter({self.server!r}, {self.mac!r}, token=<redacted>)"

    def _hide(self, text: str) -> str:
        text = redact_url(text)
        return text.replace(self._token, "REDACTED") if self._token else text

    def _url(self, what: str) -> str:
        return f"{self.server}/api/v1/hosts/{(self.mac or '').replace(':', '-')}/{what}"

    def event(
        self,
        state: State | str,
        *,
        step: str | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> None:
        self._pending.append(event_body(state, step, progress, message))
        del self._pending[:-MAX_PENDING]
        self.flush()

    def flush(self) -> None:
        """Send the waiting events in order; stop at the first the server cannot take now."""
        if self.mac is None:
            return  # the host's MAC is not known yet: the network step sets it
        while self._pending:
            if not self._send("POST", self._url("events"), json=self._pending[0]):
                log.warning("%d event(s) wait for the server", len(self._pending))
                return
            self._pending.pop(0)

    def upload_logs(self, bundle: Path) -> None:
        if self.mac is None:
            log.warning("the host's MAC is unknown: the log bundle %s is not uploaded", bundle)
            return
        self.flush()
        headers = {"Content-Type": "application/x-bzip2"}
        if self._send("PUT", self._url("logs"), data=bundle.read_bytes(), headers=headers):
            log.info("log bundle uploaded (%d bytes)", bundle.stat().st_size)
        else:
            log.warning("the log bundle could not be uploaded; it stays at %s", bundle)

    def _send(self, method: str, url: str, **kwargs: Any) -> bool:
        """True when the server answered (a refusal is logged and dropped); False when
        it could not be reached after every attempt."""
        headers = {"Authorization": f"Bearer {self._token}", **kwargs.pop("headers", {})}
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._backoff * 2 ** (attempt - 1))
            try:
                response = self._session.request(
                    method, url, headers=headers, timeout=self._timeout, **kwargs
                )
            except requests.RequestException as exc:
                log.warning("%s %s: %s", method, url, self._hide(str(exc)))
                continue
            if response.status_code < 300:
                return True
            text = self._hide(response.text[:200])
            if response.status_code < 500:
                log.error("%s %s refused: HTTP %d %s", method, url, response.status_code, text)
                return True  # retrying cannot help: drop it
            log.warning("%s %s: HTTP %d %s", method, url, response.status_code, text)
        return False
