"""The API's edge: every ``/api/v1`` route declared once, its caller checked, its body typed.

    Route(method, path, handler, caller, summary, body=Event, reply=EventReply)

``add_routes`` registers a table of ``Route``s, each behind one wrapper of its own (no
middleware: a layer of aiohttp's per request costs every route, API or not). The wrapper
checks the request's caller against its route's ``caller`` (``caller_check``) before
anything is looked up, so a request without the right secret gets 401 whatever the MAC
in its path: it never learns whether that host exists. Then it reads
the body (``MAX_BODY`` bytes at most), decodes it into the route's declared message
(``common.protocol``: a wrong type, a missing field or a field the message's version
does not know is a 400 naming the field) and calls the handler with a typed ``Call``;
what the handler returns is encoded as the reply. ``openapi`` describes the same
table.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from common.errors import InputError
from common.protocol.codec import decode, encode
from common.protocol.messages import NoBody
from pxe_server.bmc_url import BmcError
from pxe_server.http_files import Context, context, error
from pxe_server.jobs import Conflict, UnknownJob, UnknownPool
from pxe_server.limits import (
    BODY_GRACE,
    BODY_IDLE_TIMEOUT,
    BODY_MIN_RATE,
    DECODED_BODIES,
    DECODED_BODY_BYTES,
    MAX_BODY,
)
from pxe_server.model import Host, normalise_mac
from pxe_server.operator_view import UnknownProfile
from pxe_server.registry import EnrolRefused, Registry, TransitionRefused, UnknownHost
from pxe_server.secrets import Purpose
from pxe_server.segments import PowerNotAnswered
from pxe_server.store import outage
from pxe_server.updates import UnknownUpdate

B = TypeVar("B")

log = logging.getLogger("netinstall.http")

JSON_TYPE = "application/json"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Caller(enum.Enum):
    """Who may call a route: what its ``Authorization: Bearer`` must carry."""

    ANYONE = "anyone"
    OPERATOR = "operator"  # the server's API token (missing: 401, wrong: 403)
    TICKET = "ticket"  # the host's install token: enrolment only (401)
    HOST = "host"  # the install key its installer enrolled, or its agent credential (401)
    AGENT = "agent"  # the host's agent credential only (401)


@dataclass(frozen=True)
class Call(Generic[B]):
    """What a handler gets: the request's body as its declared message, the MAC of its
    path (normalised) and, for host and agent routes, the host whose secret it carries."""

    request: web.Request
    ctx: Context
    body: B
    host: Host | None
    proved: Purpose | None = None  # which of the host's secrets the request carried

    @property
    def mac(self) -> str:
        """The path's MAC, normalised (InputError, a 400, when it is none): the caller's
        own on host and agent routes (``caller_check`` found it is the path's)."""
        if self.host is not None:
            return self.host.mac
        return normalise_mac(self.request.match_info["mac"])


Handler = Callable[[Call[Any]], Awaitable[object]]


@dataclass(frozen=True)
class Route:
    """One API route: what it is called with, by whom, and what it answers."""

    method: str
    path: str  # aiohttp's syntax, which is OpenAPI's: /api/v1/hosts/{mac}
    handler: Handler
    caller: Caller
    summary: str
    body: type = NoBody  # the request's message (NoBody: none is read)
    reply: type | None = None  # the reply's message (None: a document of its own)
    status: int = 200
    raw_body: str | None = None  # the media type of a body the handler reads itself
    raw_reply: str | None = None  # the media type of a reply the handler writes itself
    # Bodies many hosts send byte for byte alike, with no secret in them (progress events,
    # check-ins): each distinct one decoded once (``DecodedBodies``).
    alike: bool = False
    refusals: tuple[int, ...] = ()  # statuses besides 400, 401/403 and 500

    @property
    def template(self) -> str:
        """The path as OpenAPI writes it: ``{name}`` without aiohttp's ``:regex``."""
        return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", self.path)


ROUTES = web.AppKey("api_routes", dict[web.AbstractRoute, Route])


def bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def plain_refusal(base: str, request: web.Request) -> web.Response:
    """An operator route asked on the plain port of a server with TLS on: 403, whatever
    the request carries (its token, if any, is not even looked at), naming the https URL."""
    return error(
        403,
        f"this server serves its operator API over HTTPS only, so that the API token never "
        f"crosses the network in clear: use {base}{request.rel_url.path} "
        f"(netinstall --server {base})",
    )


def _refused(caller: Caller, wrong: bool) -> web.Response:
    if caller is Caller.OPERATOR:
        if wrong:
            return error(
                403,
                "wrong API token; the server directory's api-token file holds it (if that "
                "copy is lost or leaked, `netinstall server token rotate DIR` writes a new "
                "one, which a running server takes within a second)",
            )
        return error(
            401, "this call needs Authorization: Bearer <the server's API token>", **_CHALLENGE
        )
    needs, said = _NEEDS[caller]
    prefix = f"{said}; " if wrong else ""
    return error(401, f"{prefix}this call needs Authorization: Bearer <{needs}>", **_CHALLENGE)


_NEEDS = {  # what a host route's bearer must be, and what a wrong one is called
    Caller.TICKET: ("the host's install token", "wrong or dead install token"),
    Caller.HOST: (
        "the install key this host's installer enrolled, or its agent credential",
        "wrong or retired install key or credential",
    ),
    Caller.AGENT: ("the host's agent credential", "wrong or revoked agent credential"),
}


def host_of_secret(registry: Registry, caller: Caller, given: str) -> tuple[Host, Purpose] | None:
    """The host whose install token (TICKET routes), enrolled install key or agent
    credential (HOST routes) or agent credential (AGENT routes) this is, and which of
    them it is. Blocks."""
    if caller is Caller.TICKET:
        found = registry.host_by_token(given)
        return None if found is None else (found, Purpose.INSTALL_TOKEN)
    if caller is Caller.HOST:
        found = registry.host_by_install_key(given)
        if found is not None:
            return found, Purpose.INSTALL_KEY
    found = registry.host_by_agent_credential(given)
    return None if found is None else (found, Purpose.AGENT_CREDENTIAL)


def _path_mac(request: web.Request) -> str | None:
    try:
        return normalise_mac(request.match_info.get("mac", ""))
    except InputError:
        return None


def _is_path_mac(request: web.Request, mac: str) -> bool:
    """Whether the request's path names ``mac`` (normalised). Cheap when the path spells
    it normalised or with dashes, as clients do; any other spelling is normalised."""
    said = request.match_info.get("mac", "")
    return said in (mac, mac.replace(":", "-")) or _path_mac(request) == mac


def caller_check(
    route: Route, request: web.Request, ctx: Context
) -> web.Response | tuple[Host, Purpose] | None:
    """The caller of ``route`` checked before its handler looks anything up: the refusal
    (401/403), or the host whose secret the request carries and which secret it is (None:
    an operator's or a public route). Indexed reads on this thread's registry connection
    (WAL: they never wait for a writer)."""
    caller = route.caller
    if caller is Caller.ANYONE:
        return None
    if caller is Caller.OPERATOR and ctx.operator_base is not None and not request.secure:
        return plain_refusal(ctx.operator_base, request)
    given = bearer(request)
    if given is None:
        return _refused(caller, wrong=False)
    if caller is Caller.OPERATOR:
        return None if ctx.registry.api_token_matches(given) else _refused(caller, wrong=True)
    found = host_of_secret(ctx.registry, caller, given)
    if found is None or not _is_path_mac(request, found[0].mac):  # another host's: no better
        return _refused(caller, wrong=True)
    return found


def _check_media_type(request: web.Request) -> None:
    """A body sent as JSON, or with no Content-Type at all (read as JSON); InputError for
    any other media type or a charset other than UTF-8 (RFC 8259: JSON is UTF-8)."""
    if "Content-Type" not in request.headers:
        return
    media = request.content_type
    kind, _, subtype = media.partition("/")
    if not (media == "application/json" or (kind == "application" and subtype.endswith("+json"))):
        shown = media[:64] + ("..." if len(media) > 64 else "")
        raise InputError(f"the request body must be JSON (Content-Type: {JSON_TYPE}), not {shown}")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise InputError(f"the request body must be UTF-8 JSON, not charset {charset[:32]}")


def check_not_encoded(request: web.Request) -> None:
    """No Content-Encoding: the server reads bodies as sent (``make_app`` turns aiohttp's
    own decompression off), so nothing inflates past the limits and no codec fails."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise InputError(
            f"request bodies are read as sent: no Content-Encoding, not {encoding[:32]!r}"
        )


class BodyTooLarge(Exception):
    """A request body over its route's limit (413)."""

    def __init__(self, limit: int, what: str = "a request body") -> None:
        super().__init__(f"{what} may have at most {limit} bytes")
        self.limit = limit


class SlowBody(Exception):
    """A body that stopped coming or came too slowly (408; the connection is closed)."""

    def __init__(self, received: int) -> None:
        super().__init__(
            f"the request body came too slowly ({received} bytes; at least one byte every "
            f"{BODY_IDLE_TIMEOUT:g} s and {BODY_MIN_RATE} bytes a second after the first "
            f"{BODY_GRACE:g} s); it was dropped"
        )
        self.received = received


class ClientGone(Exception):
    """The client closed its connection (or broke its framing) before its body was in."""

    def __init__(self, received: int, why: BaseException) -> None:
        said = str(why).strip().splitlines()[0] if str(why).strip() else type(why).__name__
        super().__init__(f"the client went away after {received} bytes of its body ({said})")
        self.received = received


async def body_chunks(
    request: web.Request, limit: int, what: str = "a request body"
) -> AsyncIterator[bytes]:
    """The request body as it arrives, never more than ``limit`` bytes in all.

    BodyTooLarge past ``limit`` (at once when Content-Length says so); SlowBody when no
    byte came for ``BODY_IDLE_TIMEOUT`` or, after ``BODY_GRACE``, fewer than
    ``BODY_MIN_RATE`` bytes a second on average; ClientGone when the connection ends first.
    """
    if (request.content_length or 0) > limit:
        raise BodyTooLarge(limit, what)
    content = request.content
    if content.is_eof():  # all of it is in (a small body comes with its headers): no wait
        try:
            whole = content.read_nowait()
        except (ConnectionError, HttpProcessingError, RequestPayloadError) as exc:
            raise ClientGone(0, exc) from None
        if len(whole) > limit:
            raise BodyTooLarge(limit, what)
        if whole:
            yield whole
        return
    loop = asyncio.get_running_loop()
    start, received = loop.time(), 0
    while True:
        # The latest moment the bytes so far still meet the average rate.
        due = start + BODY_GRACE + received / BODY_MIN_RATE
        wait = max(0.0, min(BODY_IDLE_TIMEOUT, due - loop.time()))
        try:
            async with asyncio.timeout(wait):
                chunk = await request.content.readany()
        except TimeoutError:
            raise SlowBody(received) from None
        except (ConnectionError, HttpProcessingError, RequestPayloadError) as exc:
            raise ClientGone(received, exc) from None
        if not chunk:
            return
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(limit, what)
        yield chunk


async def read_json(request: web.Request) -> object:
    """The request body parsed as JSON, at most ``MAX_BODY`` bytes; InputError otherwise."""
    return parse_json(await read_body(request))


async def read_body(request: web.Request) -> bytes:
    """The request body of a JSON request, at most ``MAX_BODY`` bytes, as sent (its media
    type and encoding checked: InputError)."""
    _check_media_type(request)
    check_not_encoded(request)
    return b"".join([chunk async for chunk in body_chunks(request, MAX_BODY)])


def parse_json(data: bytes) -> object:
    """``data`` parsed as JSON (None when blank); InputError otherwise."""
    if not data.strip():
        return None
    try:
        # As json.loads reads bytes, with one decoder made once (json.loads with an
        # argument makes a new decoder, and its scanner, per call).
        return _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except RecursionError:
        raise InputError("the request body nests too deeply") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, an integer too long
        raise InputError("the request body is not JSON") from None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


class DecodedBodies:
    """The decoded message of each distinct body of routes whose hosts send alike bodies
    (``Route.alike``): 14 of an install's 23 requests are progress events, and hosts that
    run one installer send them byte for byte the same. At most ``DECODED_BODIES``
    bodies of at most ``DECODED_BODY_BYTES`` each, the oldest dropped first. Messages are
    frozen: one decoded message serves every request that sent its body."""

    def __init__(self, entries: int = DECODED_BODIES, longest: int = DECODED_BODY_BYTES) -> None:
        self.entries, self.longest = entries, longest
        self._decoded: dict[tuple[type, bytes], object] = {}

    def __len__(self) -> int:
        return len(self._decoded)

    def decode(self, kind: type[B], data: bytes) -> B:
        """``data`` decoded as ``kind`` (``common.protocol.codec.decode``), once per body."""
        if len(data) > self.longest:
            return decode(kind, parse_json(data))
        key = (kind, data)
        found = self._decoded.get(key)
        if found is None:
            found = decode(kind, parse_json(data))  # a refusal raises: nothing kept
            if len(self._decoded) >= self.entries:
                del self._decoded[next(iter(self._decoded))]
            self._decoded[key] = found
        return found  # type: ignore[return-value]


DECODED = DecodedBodies()


# Seconds a client is told to wait (Retry-After) when the registry's database is in
# trouble (``store.outage``): the installer, the agent and the CLI send the request again.
DB_RETRY_AFTER = 5
DB_UNAVAILABLE = "the registry's database is unavailable for a moment; send the request again"


def unavailable(method: str, path: str, exc: BaseException) -> web.Response | None:
    """A database outage met while serving ``method path`` (``store.outage.reason``): one
    log line and a 503 with ``Retry-After``; None when ``exc`` is no outage (a bug: 500).
    ``path`` as it may be logged (no token in it)."""
    why = outage.reason(exc)
    if why is None:
        return None
    log.warning("%s %s: 503, the registry's database: %s", method, path, why)
    return error(503, DB_UNAVAILABLE, **{"Retry-After": str(DB_RETRY_AFTER)})


def refusal(exc: InputError) -> web.Response:
    """InputError as a reply: 404 for an unknown host, 409 for a refused transition, 400."""
    message = " ".join(exc.problems)
    if isinstance(exc, UnknownHost | UnknownProfile | UnknownPool | UnknownJob | UnknownUpdate):
        return error(404, message)
    if isinstance(exc, Conflict):
        return error(409, message)
    if isinstance(exc, EnrolRefused):
        return error(exc.status, message, **(_CHALLENGE if exc.status == 401 else {}))
    if isinstance(exc, TransitionRefused):
        return error(409, message)
    if isinstance(exc, BmcError):
        return error(502, message)
    if isinstance(exc, PowerNotAnswered):
        return error(504, message)
    return error(400, message)


def _wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The one wrapper of an API route: its caller checked (``caller_check``), its body
    read and decoded, its handler called, the reply encoded."""

    async def serve(request: web.Request) -> web.StreamResponse:
        ctx = context(request)
        checked = caller_check(route, request, ctx)
        if isinstance(checked, web.Response):
            return checked
        host, proved = (None, None) if checked is None else checked
        try:
            body: object = NoBody()
            if route.alike:
                body = DECODED.decode(route.body, await read_body(request))
            elif route.body is not NoBody:
                body = decode(route.body, await read_json(request))
            result = await route.handler(Call(request, ctx, body, host, proved))
        except BodyTooLarge as exc:
            return error(413, str(exc))
        except SlowBody as exc:
            log.info("%s %s from %s: %s", request.method, request.path, request.remote, exc)
            reply = error(408, str(exc))
            reply.force_close()  # what else it sends is not read
            return reply
        except ClientGone as exc:  # nobody to answer: one line, no traceback
            log.info("%s %s from %s: %s", request.method, request.path, request.remote, exc)
            reply = error(400, str(exc))
            reply.force_close()
            return reply
        except InputError as exc:
            return refusal(exc)
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(encode(result), status=route.status)

    serve.__doc__ = route.handler.__doc__
    return serve


def add_routes(app: web.Application, routes: tuple[Route, ...]) -> None:
    """Register ``routes``, each with its own wrapper (``_wrap``); ``ROUTES`` keeps each
    one's declaration by its registered route (``openapi``)."""
    table = {}
    for route in routes:
        registered = app.router.add_route(route.method, route.path, _wrap(route))
        table[registered] = route
    app[ROUTES] = table
