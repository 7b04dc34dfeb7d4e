"""The HTTP side of docs/protocol.md: events, check-ins and downloads.

Requests are built and replies read with the protocol's declarations
(``common.protocol``): the same types the server decodes and encodes. A reply that
does not match its declaration is a ``ServerError`` naming the field.

The session is injected (``requests.Session`` in dom0, a fake in tests). The
bearer secret travels only in the Authorization header and never in a message:
URLs in messages lose their query string.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from common.protocol.codec import ProtocolError, decode, encode
from common.protocol.messages import Checkin, CheckinReply, Event, EventReply

from .errors import NetworkError, ServerError, Unauthorized

R = TypeVar("R")

DEFAULT_TIMEOUT = 30.0
CHUNK = 1 << 20


class HttpResponse(Protocol):
    @property
    def status_code(self) -> int: ...

    def json(self) -> Any: ...

    def iter_content(self, chunk_size: int) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class HttpSession(Protocol):
    def post(
        self, url: str, *, json: Any, headers: Mapping[str, str], timeout: float
    ) -> HttpResponse: ...

    def get(
        self, url: str, *, headers: Mapping[str, str], timeout: float, stream: bool
    ) -> HttpResponse: ...

    def put(
        self, url: str, *, data: bytes, headers: Mapping[str, str], timeout: float
    ) -> HttpResponse: ...


def public_url(url: str) -> str:
    """``url`` without its query and fragment, fit for a log line."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class ServerClient:
    """One host's side of the protocol with the server at ``server``."""

    def __init__(
        self, server: str, mac: str, session: HttpSession, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.server = server.rstrip("/")
        self.host_url = f"{self.server}/api/v1/hosts/{quote(mac, safe='')}"
        self.session = session
        self.timeout = timeout

    def post_event(self, token: str, event: Event) -> EventReply:
        return self._post(f"{self.host_url}/events", token, event, EventReply)

    def checkin(self, credential: str, checkin: Checkin) -> CheckinReply:
        return self._post(f"{self.host_url}/checkin", credential, checkin, CheckinReply)

    def _post(self, url: str, secret: str, message: object, reply_type: type[R]) -> R:
        try:
            response = self.session.post(
                url, json=encode(message), headers=_bearer(secret), timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise NetworkError(f"POST {url}: {type(exc).__name__}: {exc}") from exc
        try:
            _check_status("POST", url, response.status_code)
            try:
                reply = response.json()
            except ValueError as exc:
                raise ServerError(f"POST {url}: the reply is not JSON", 200) from exc
        finally:
            response.close()
        try:
            return decode(reply_type, reply, strict=False)
        except ProtocolError as exc:
            raise ServerError(
                f"POST {url}: the reply does not fit the protocol: {exc}", 200
            ) from exc

    def put_logs(self, secret: str, data: bytes) -> None:
        """Upload a log bundle (tar.bz2) to the host's logs route (``PUT .../logs``)."""
        url = f"{self.host_url}/logs"
        headers = {**_bearer(secret), "Content-Type": "application/x-bzip2"}
        try:
            response = self.session.put(url, data=data, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise NetworkError(f"PUT {url}: {type(exc).__name__}: {exc}") from exc
        try:
            if response.status_code != 201:
                _check_status("PUT", url, response.status_code)
        finally:
            response.close()

    def download(self, url: str, dest: Path, credential: str, limit: int | None = None) -> int:
        """Fetch ``url`` into ``dest`` through a temporary name; returns its size.

        The credential goes only to the server's own origin. An empty file, or one of
        more than ``limit`` bytes, is an error and never replaces ``dest``.
        """
        headers = _bearer(credential) if _origin(url) == _origin(self.server) else {}
        shown = public_url(url)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            response = self.session.get(url, headers=headers, timeout=self.timeout, stream=True)
        except requests.RequestException as exc:
            raise NetworkError(f"GET {shown}: {type(exc).__name__}") from exc
        size = 0
        try:
            _check_status("GET", shown, response.status_code)
            with tmp.open("wb") as out:
                for chunk in response.iter_content(CHUNK):
                    size += len(chunk)
                    _bounded(shown, size, limit)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except requests.RequestException as exc:
            tmp.unlink(missing_ok=True)
            raise NetworkError(f"GET {shown}: {type(exc).__name__} while downloading") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            response.close()
        if size == 0:
            tmp.unlink(missing_ok=True)
            raise ServerError(f"GET {shown}: the file is empty")
        tmp.replace(dest)
        return size


def _bounded(shown: str, size: int, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise ServerError(f"GET {shown}: more than the {limit} bytes expected")


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _check_status(method: str, url: str, status: int) -> None:
    if status == 200:
        return
    if status == 401:
        raise Unauthorized(f"{method} {url}: 401, the server refused our token or credential", 401)
    raise ServerError(f"{method} {url}: HTTP {status}", status)
