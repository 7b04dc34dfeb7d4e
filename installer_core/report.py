"""Where the installer's progress goes (docs/protocol.md): the provisioning server or nowhere.

``ServerReporter`` draws an install key at start and, once the network is up, enrols
it with the install token (``POST SERVER/api/v1/hosts/<mac>/enrol``: the token is a
ticket for that one call, docs/protocol.md "Install tokens"). Every later call proves
the key (``Authorization: Bearer <install key>``): the answer file (``authorise``
gives a session the key for the server's address only), the events
(``.../events``, an ``Event`` declared in ``common.protocol.messages``), the log
bundle (``.../logs``); first boot reports ``running`` with it too (firstboot.json).

The server being unreachable never fails an install: an event that cannot be sent
after a few tries is logged and kept (a few at most) to go out before the next
one, so the events sent before the network was up arrive once it is. A server that
refuses the key (another boot of this host enrolled since) stops the install:
``KeyRefused``. Neither token nor key is ever logged.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from answerfile.bootargs import redact_url
from common.errors import NetinstallError
from common.protocol.codec import encode
from common.protocol.messages import Enrolment, Event, State

log = logging.getLogger(__name__)

MAX_PENDING = 20  # events kept while the server is unreachable; the oldest go first


class KeyRefused(NetinstallError):
    """The server refused this install's token or key: another boot of the host enrolled
    (a power cut, a retry, or someone else: the operator sees which), the token expired,
    or the host was rearmed. The install stops; nothing more is sent."""


class ServerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <key>`` on requests to the server's own address only (the
    repository, scripts and answer-file generators may live elsewhere)."""

    def __init__(self, server: str, key: str) -> None:
        self._origin = _origin(server)
        self._key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if _origin(request.url or "") == self._origin:
            request.headers["Authorization"] = f"Bearer {self._key}"
        return request


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    try:
        port = parts.port or default
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class NullReporter:
    """No server: events only reach the install log."""

    install_key: str | None = None
    update_key: str | None = None

    def enrol(self, session: requests.Session) -> None:
        """Nothing to enrol with."""

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
        # This install's own key: enrolled with the token, then the bearer of every call.
        self.install_key = secrets.token_urlsafe(32)
        # The server's update key, from the enrolment's reply: written into dom0.
        self.update_key: str | None = None
        self._enrolled = False
        self._refused: str | None = None
        self._session = session or requests.Session()
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._sleep = sleep
        self._pending: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"ServerReporter({self.server!r}, {self.mac!r}, token=<redacted>)"

    def _hide(self, text: str) -> str:
        text = redact_url(text).replace(self.install_key, "REDACTED")
        return text.replace(self._token, "REDACTED") if self._token else text

    def enrol(self, session: requests.Session) -> None:
        """Enrol this install's key with the install token, then give ``session`` the key
        for the server's address. ``KeyRefused`` when the server will not enrol it;
        ``NetinstallError`` when the server cannot be reached."""
        if self.mac is None:
            raise NetinstallError("the host's MAC is not known: cannot enrol with the server")
        if not self._enrolled:
            body = encode(Enrolment(self.install_key))
            replies: list[Any] = []
            if not self._send(
                "POST", self._url("enrol"), json=body, bearer=self._token, replies=replies
            ):
                raise NetinstallError(f"cannot reach the server {self.server} to enrol")
            self.update_key = _update_key(replies)
            self._enrolled = True
            log.info("enrolled this install's key with the server")
            self.flush()
        session.auth = ServerAuth(self.server, self.install_key)

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
        if self.mac is None or not self._enrolled:
            return  # not yet: the network step learns the MAC, then the installer enrols
        while self._pending:
            if not self._send("POST", self._url("events"), json=self._pending[0]):
                log.warning("%d event(s) wait for the server", len(self._pending))
                return
            self._pending.pop(0)

    def upload_logs(self, bundle: Path) -> None:
        if self.mac is None or not self._enrolled or self._refused:
            log.warning("not enrolled with the server: the log bundle %s is not uploaded", bundle)
            return
        self.flush()
        headers = {"Content-Type": "application/x-bzip2"}
        if self._send("PUT", self._url("logs"), data=bundle.read_bytes(), headers=headers):
            log.info("log bundle uploaded (%d bytes)", bundle.stat().st_size)
        else:
            log.warning("the log bundle could not be uploaded; it stays at %s", bundle)

    def _send(
        self,
        method: str,
        url: str,
        *,
        bearer: str | None = None,
        replies: list[Any] | None = None,
        **kwargs: Any,
    ) -> bool:
        """True when the server answered (a refusal is logged and dropped); False when
        it could not be reached after every attempt. ``KeyRefused`` the first time the
        server refuses the token or key (401, or 409 for the enrolment); after that
        nothing is sent."""
        if self._refused:
            log.warning("%s %s not sent: the server refused this install", method, url)
            return True
        secret = bearer or self.install_key
        headers = {"Authorization": f"Bearer {secret}", **kwargs.pop("headers", {})}
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
                if replies is not None:  # the reply's JSON is wanted (none: None)
                    try:
                        replies.append(json.loads(response.text))
                    except ValueError:
                        replies.append(None)
                return True
            text = self._hide(response.text[:200])
            if response.status_code == 401 or (bearer and response.status_code == 409):
                self._refused = (
                    f"the server refused this install: HTTP {response.status_code} {text}"
                )
                log.error("%s %s: %s", method, url, self._refused)
                raise KeyRefused(self._refused)
            if response.status_code < 500:
                log.error("%s %s refused: HTTP %d %s", method, url, response.status_code, text)
                return True  # retrying cannot help: drop it
            log.warning("%s %s: HTTP %d %s", method, url, response.status_code, text)
        return False


MAX_UPDATE_KEY = 512  # characters of an update key line


def _update_key(replies: list[Any]) -> str | None:
    """The update key an enrolment's reply carries, if it is one (an ssh-ed25519 key line);
    None otherwise (a server from before updates: the agent gets it at its check-in)."""
    found = replies[0] if replies else None
    key = found.get("update_key") if isinstance(found, dict) else None
    if not isinstance(key, str):
        return None
    line = " ".join(key.split())
    if not line.startswith("ssh-ed25519 ") or len(line) > MAX_UPDATE_KEY or not line.isprintable():
        log.warning("the server's update key is not an ssh-ed25519 key line; not kept")
        return None
    return line
