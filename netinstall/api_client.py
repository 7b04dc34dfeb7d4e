"""The operator API's client: ``netinstall --server URL`` (``netinstall.fleet.RemoteFleet``).

One request a call, on a connection of its own, with the protocol's messages
(``common.protocol``): the body encoded from its declaration, the reply decoded into
its own (leniently: a newer server may add fields). The bounds, here and in the README
("Remote operation"):

    CONNECT_TIMEOUT  seconds to connect and finish the TLS handshake
    REPLY_TIMEOUT    seconds from the request sent to the last byte of its reply
    MAX_REPLY        bytes of a reply at most (10,000 hosts' list is about 10 MB)
    DOWNLOAD_TIMEOUT seconds from the request to the last byte of a file (``download``: a
                     log bundle, whose bound in bytes is the caller's)
    UNAVAILABLE_RETRIES, MAX_RETRY_AFTER
                     a GET answered 503 (the server's database busy or away for a
                     moment: docs/deployment.md) is asked again that many times, after
                     the reply's Retry-After, at most MAX_RETRY_AFTER seconds each

Every failure is one sentence: the server unreachable, TLS verification failed, the
reply too slow, too large or not a netinstall reply (``RemoteError``, exit 1), or the
server's own refusal (4xx: its sentence, as the same command says it locally, exit 2).
The token is sent only over https, or over http to this machine itself (loopback).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import ssl
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import quote, urlsplit

from common.errors import InputError, NetinstallError
from common.protocol.codec import ProtocolError, decode, encode, message_name

CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 60.0
MAX_REPLY = 64 << 20
DOWNLOAD_TIMEOUT = 600.0  # seconds for a file's whole reply (a 64 MiB bundle at 110 KB/s)
READ_CHUNK = 1 << 16
MAX_TOKEN_FILE = 4096  # bytes of a token file at most (a token is 32 characters)
UNAVAILABLE_RETRIES = 2  # a GET's retries after a 503 (only GETs: they change nothing)
MAX_RETRY_AFTER = 10.0  # seconds waited at most before one, whatever Retry-After says

M = TypeVar("M")


class Sink(typing.Protocol):
    """Where ``ApiClient.download`` writes a file as it comes. Its ``write`` raises no
    OSError of its own (it names its file in an error of ours): one would read as the
    connection's."""

    def write(self, data: bytes, /) -> object: ...


class RemoteError(NetinstallError):
    """The server could not be asked, or its reply cannot be read (one sentence)."""


class Refused(InputError):
    """The server refused the request (4xx): its own sentence, as the registry says it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class NotFound(Refused):
    """404: no such host or profile."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Endpoint:
    """Where the API is: scheme, host and port of ``--server URL``."""

    url: str  # as given, without a trailing slash
    https: bool
    host: str
    port: int


def endpoint(url: str) -> Endpoint:
    """``--server URL`` checked: https (or http to loopback), a host, no path; InputError."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"--server {url!r}: expected https://HOST[:PORT], e.g. https://10.0.0.1:8443"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise InputError(f"--server {url!r}: give the server's address alone, without a path")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise InputError(f"--server {url!r}: its port is not a number from 1 to 65535") from None
    if scheme == "http" and not _loopback(parts.hostname):
        raise InputError(
            f"--server {url!r} would send the API token across the network in clear: use the "
            "server's https URL (server run --tls-cert FILE --tls-key FILE)"
        )
    return Endpoint(url.strip().rstrip("/"), scheme == "https", parts.hostname, port)


def read_token(token_file: Path | None, env_token: str | None) -> str:
    """The API token: ``--token-file FILE``'s first line, else ``NETINSTALL_TOKEN``."""
    if token_file is not None:
        try:
            with token_file.open("rb") as file:
                data = file.read(MAX_TOKEN_FILE + 1)
        except OSError as exc:
            raise InputError(
                f"--token-file {token_file}: cannot read it ({exc.strerror})"
            ) from None
        lines = data[:MAX_TOKEN_FILE].decode("utf-8", "replace").strip().splitlines()
        token = lines[0].strip() if lines else ""
        if not token or len(data) > MAX_TOKEN_FILE:
            raise InputError(f"--token-file {token_file}: no API token in it")
        return token
    if env_token and env_token.strip():
        return env_token.strip()
    raise InputError(
        "--server needs the API token: --token-file FILE (a copy of the server's "
        "DIR/api-token) or NETINSTALL_TOKEN"
    )


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verifying, TLS 1.2 at least: the system's CAs, or ``--ca-file`` alone."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except ssl.SSLError as exc:  # an OSError too: first
        raise InputError(f"--ca-file {ca_file}: no PEM certificate in it ({exc.reason})") from None
    except OSError as exc:
        raise InputError(f"--ca-file {ca_file}: cannot read it ({exc.strerror})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (``time.monotonic``); TimeoutError when none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


class ApiClient:
    """Calls of the operator API at ``where`` with ``token``."""

    def __init__(
        self,
        where: Endpoint,
        token: str,
        context: ssl.SSLContext | None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        reply_timeout: float = REPLY_TIMEOUT,
        max_reply: int = MAX_REPLY,
        download_timeout: float = DOWNLOAD_TIMEOUT,
    ) -> None:
        self.where = where
        self._token = token
        self._context = context
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.max_reply = max_reply
        self.download_timeout = download_timeout

    def call(self, method: str, path: str, reply: type[M], body: object | None = None) -> M:
        """``method path`` (``path`` under /api/v1/, its parts quoted by the caller) with
        ``body`` (a message), its reply decoded as ``reply``."""
        data = None if body is None else json.dumps(encode(body)).encode()
        got = self._send(method, path, data, _Into(None, self.max_reply, self.reply_timeout))
        return self._decoded(got, reply)

    def _decoded(self, got: _Reply, reply: type[M]) -> M:
        """A JSON reply as ``reply``; a refusal raised as the server said it."""
        parsed = self._parsed(got.status, got.body)
        if got.status >= 400:
            self._refuse(got.status, parsed)
        try:
            return decode(reply, parsed, strict=False)
        except ProtocolError as exc:
            raise RemoteError(
                f"{self.where.url} sent a reply that is no {message_name(reply)} "
                f"({' '.join(exc.problems)}): is it a netinstall server of this version?"
            ) from None

    def upload(self, path: str, file: Path, media_type: str, reply: type[M]) -> M:
        """POST ``file`` as the body (``media_type``), never retried; its reply decoded."""
        with file.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            upload = _Upload(stream, size, media_type)
            into = _Into(None, self.max_reply, self.reply_timeout)
            got = self._exchange("POST", f"/api/v1/{path}", upload, into)
        return self._decoded(got, reply)

    def download(self, path: str, sink: Sink, limit: int) -> int:
        """``GET path`` (under /api/v1/) of a file, its body written to ``sink`` as it
        comes; its size. At most ``limit`` bytes, within ``DOWNLOAD_TIMEOUT``, and as many
        as its Content-Length says: else RemoteError, and the caller discards what ``sink``
        got. The server's refusal (a JSON error, not written to ``sink``) as ``call``'s."""
        got = self._send("GET", path, None, _Into(sink, limit, self.download_timeout))
        if got.status >= 400:
            self._refuse(got.status, self._parsed(got.status, got.body))
        if got.status != 200:
            raise RemoteError(
                f"{self.where.url} answered HTTP {got.status}, not a file: is it a "
                "netinstall server?"
            )
        return got.size

    def _send(self, method: str, path: str, data: bytes | None, into: _Into) -> _Reply:
        """One request, asked again after a 503 (``UNAVAILABLE_RETRIES`` times, GETs only)."""
        retries = UNAVAILABLE_RETRIES if method == "GET" else 0
        while True:
            got = self._exchange(method, f"/api/v1/{path}", data, into)
            if got.status != 503 or retries == 0:
                return got
            retries -= 1
            time.sleep(got.retry_after)

    def _refuse(self, status: int, parsed: object) -> typing.NoReturn:
        """The error a 4xx or 5xx reply is: the server's own sentence where it has one."""
        said = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(said, str) or not said.strip():
            raise RemoteError(
                f"{self.where.url} answered HTTP {status} without a netinstall error: is "
                "it a netinstall server?"
            )
        if status == 502:  # the server could not do it: a BMC's failure, its sentence
            raise RemoteError(said)
        if status >= 500:
            raise RemoteError(f"the server at {self.where.url} failed: {said}")
        raise (NotFound if status == 404 else Refused)(said, status)

    def _parsed(self, status: int, payload: bytes) -> object:
        try:
            return json.loads(payload)
        except ValueError:  # not JSON, not UTF-8
            raise RemoteError(
                f"{self.where.url} answered HTTP {status} with something that is not JSON: "
                "is it a netinstall server?"
            ) from None

    def _connection(self) -> http.client.HTTPConnection:
        where = self.where
        if where.https:
            return http.client.HTTPSConnection(
                where.host, where.port, timeout=self.connect_timeout, context=self._context
            )
        return http.client.HTTPConnection(where.host, where.port, timeout=self.connect_timeout)

    def _exchange(
        self, method: str, target: str, data: bytes | _Upload | None, into: _Into
    ) -> _Reply:
        """One request and its whole reply, inside the bounds ``into`` gives: a 200's body
        into its sink if it has one, any other body (JSON) kept in the reply."""
        url = self.where.url
        conn = self._connection()
        try:
            conn.connect()
            deadline = time.monotonic() + into.timeout
            # The reply reads this socket even after the connection lets go of it.
            sock = typing.cast(socket.socket, conn.sock)
            sock.settimeout(into.timeout)
            accept = "application/json" if into.sink is None else "*/*"
            headers = {"Authorization": f"Bearer {self._token}", "Accept": accept}
            body: bytes | BinaryIO | None = None
            if isinstance(data, _Upload):
                headers["Content-Type"] = data.media_type
                headers["Content-Length"] = str(data.size)
                body = data.stream
            elif data is not None:
                headers["Content-Type"] = "application/json"
                body = data
            conn.request(method, quote(target, safe="/:@!$&'()*+,;=-._~%?"), body, headers)
            response = conn.getresponse()
            sink = into.sink if response.status == 200 else None
            limit = into.limit if sink is not None else self.max_reply
            said = response.getheader("Content-Length")
            length = int(said) if said is not None and said.isdigit() else None
            if length is not None and length > limit:
                raise RemoteError(self._too_large(limit))
            chunks, size = [], 0
            while True:
                sock.settimeout(_remaining(deadline))
                chunk = response.read1(READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise RemoteError(self._too_large(limit))
                if sink is None:
                    chunks.append(chunk)
                else:
                    sink.write(chunk)
            if length is not None and size < length:
                raise RemoteError(f"{url} ended its reply after {size} of {length} bytes")
            return _Reply(response.status, b"".join(chunks), _retry_after(response), size)
        except http.client.IncompleteRead:  # a chunked reply cut off: before HTTPException
            raise RemoteError(f"{url} ended its reply before its last chunk") from None
        except ssl.SSLCertVerificationError as exc:
            raise RemoteError(
                f"{url} failed TLS verification ({exc.verify_message}); give the CA that "
                "signed its certificate with --ca-file FILE (or NETINSTALL_CA_FILE)"
            ) from None
        except ssl.SSLError as exc:
            raise RemoteError(
                f"TLS with {url} failed ({exc.reason or exc}): is port {self.where.port} the "
                "server's TLS port (server run --tls-port)?"
            ) from None
        except ConnectionRefusedError:
            raise RemoteError(
                f"cannot reach {url}: connection refused (is `netinstall server run` running "
                f"there, with port {self.where.port} its "
                f"{'TLS' if self.where.https else 'HTTP'} port?)"
            ) from None
        except TimeoutError:
            raise RemoteError(
                f"{url} did not answer within {self.connect_timeout:g} s to connect and "
                f"{into.timeout:g} s to reply"
            ) from None
        except socket.gaierror as exc:
            raise RemoteError(f"cannot reach {url}: {exc.strerror}") from None
        except http.client.HTTPException as exc:
            raise RemoteError(
                f"{url} sent no HTTP reply ({type(exc).__name__}): is it a netinstall "
                "server, and its scheme (http or https) the right one?"
            ) from None
        except OSError as exc:
            raise RemoteError(f"cannot reach {url}: {exc.strerror or exc}") from None
        finally:
            conn.close()

    def _too_large(self, limit: int) -> str:
        return f"{self.where.url} sent a reply over {limit} bytes; it was not read"


@dataclass(frozen=True)
class _Upload:
    """A request body sent from a file as it is read (an update bundle)."""

    stream: BinaryIO
    size: int
    media_type: str


@dataclass(frozen=True)
class _Into:
    """Where a reply's body goes and its bounds: a 200's body into ``sink`` (None: kept
    in memory) at most ``limit`` bytes, the whole reply within ``timeout`` seconds."""

    sink: Sink | None
    limit: int
    timeout: float


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes  # empty when it went into a sink
    retry_after: float  # the seconds its Retry-After says, within MAX_RETRY_AFTER; 1 if none
    size: int  # bytes of its body


def _retry_after(response: http.client.HTTPResponse) -> float:
    said = (response.getheader("Retry-After") or "").strip()
    seconds = float(said) if said.isdigit() else 1.0
    return min(seconds, MAX_RETRY_AFTER)
