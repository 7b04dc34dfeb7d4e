"""The provisioning server's HTTP side: boot files, repository, answer files, boot configs, API.

Why aiohttp. ``benchmarks/http_servers.py`` served one 100 MB file to 50 concurrent
clients on loopback (half of them with ``Range``), each server in its own process.
In one run on a 2-CPU machine: aiohttp 0.65 s, 38 MiB peak RSS; the standard library's
``ThreadingHTTPServer`` with hand-written Range handling and ``socket.sendfile`` 0.68 s
(ratio 1.04 to aiohttp), 21 MiB; werkzeug's ``send_file`` under waitress (16 worker
threads, no sendfile) 8.6 s (ratio 13), 310 MiB. aiohttp and the standard library
move bytes equally fast (both sendfile), but aiohttp's ``web.FileResponse`` brings
``Range`` (single ranges, suffix and open-ended), ``HEAD``, ``If-Range`` and
``If-Modified-Since`` done and tested, where the standard library leaves them (and
request parsing hardening) to us; and one asyncio thread serves any number of slow
firmware clients without a thread each. waitress buffers and copies every byte
through Python, which is what a netboot server does most. So: aiohttp.

Layout: ``http_files`` (shared context, ``/boot/``, ``/repo/``), ``http_api``
(``/api/v1/``: the route table and its handlers), ``http_edge`` (the API's
authentication middleware and typed bodies), ``http_ui`` (the web console, ``/ui/``),
and here the boot routes, the request
log and ``HttpServer``, which runs its event loop in a background thread. Registry
and rendering calls run in the loop's thread pool (``http_files.blocking``), so a
slow SQLite lock never stalls a file transfer.

Request log (logger ``netinstall.http``): one line per request,
``client method path status bytes ms``; a ``token=`` query value is shown as
``REDACTED`` and headers (``Authorization``) are never logged.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import re
import socket
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jinja2
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from common.errors import InputError, NetinstallError
from common.protocol.messages import NoBody
from pxe_server import grub_tcp, http_api, http_edge, http_files, http_ui, render, shared_dir
from pxe_server.admission import RegistrationRefused, UnknownGate, UnknownLimits
from pxe_server.decide import Action
from pxe_server.http_bmc import BMC_API
from pxe_server.http_files import CONTEXT, Context, blocking, context, error
from pxe_server.http_updates import UPDATE_API
from pxe_server.limits import HEADER_TIMEOUT, LINGER
from pxe_server.model import (
    BadMac,
    Host,
    Profile,
    ServerSettings,
    UnknownPolicy,
    normalise_mac,
)
from pxe_server.registry import Registry
from pxe_server.secrets import REDACTED

log = logging.getLogger("netinstall.http")

_TOKEN_QUERY = re.compile(r"(?i)([?&](?:token|netinstall\.token)=)[^&#]*")


def loggable(raw_path: str) -> str:
    """The request target with every ``token=`` query value replaced by ``REDACTED``."""
    if "=" not in raw_path:  # no query value at all (nearly every request): no regex
        return raw_path
    return _TOKEN_QUERY.sub(rf"\g<1>{REDACTED}", raw_path)


# Requests a page's script makes by itself every few seconds (the web console's poll):
# logged only when they fail, or a console left open writes ~43,000 lines a day.
_QUIET_PATHS = ("/ui/api/fleet",)


class _AccessLog(AbstractAccessLogger):
    def log(self, request: Any, response: Any, time: float) -> None:
        if response.status < 400 and request.path in _QUIET_PATHS:
            return
        self.logger.info(
            "%s %s %s %d %d %.0f",
            request.remote,
            request.method,
            loggable(request.raw_path),
            response.status,
            response.body_length,
            time * 1000,
        )


# -- boot configs: shared with the TFTP server ----------------------------------------


Lookup = Callable[[str], tuple[Host | None, Profile | None]]


def lookup_for(registry: Registry, settings: ServerSettings, unknown: UnknownGate) -> Lookup:
    """``render.config_for_path``'s lookup: the host and its profile.

    An unknown MAC is registered with the default profile when the operator chose
    ``unknown_policy = install`` (it then has a token to fetch its answer file with), as
    far as ``unknown`` and its count limit let it (``admission``: RegistrationRefused).
    """

    def lookup(mac: str) -> tuple[Host | None, Profile | None]:
        host = registry.get_host(mac)
        if host is None and settings.unknown_policy is UnknownPolicy.INSTALL:
            host = _register_unknown(registry, mac, unknown)
        if host is None:
            return None, None
        return host, registry.get_profile(host.profile)

    return lookup


def _register_unknown(registry: Registry, mac: str, unknown: UnknownGate) -> Host:
    unknown.take(mac)
    limit = unknown.limits.count
    try:
        host, waiting = registry.add_unknown_host(mac, limit)
    except InputError as exc:  # no default profile
        unknown.refuse(RegistrationRefused(f"{mac} is not registered: {exc}", 503, 60))
    if host is None:
        unknown.refuse(
            RegistrationRefused(
                f"{mac} is not registered: {waiting} machines registered as unknown MACs have "
                f"not reported running, the most allowed (server run --unknown-limit {limit}); "
                "see `netinstall host list` and remove the stale ones with "
                "`netinstall host remove MAC`",
                503,
                60,
            )
        )
    log.info("registered unknown host %s (unknown_policy install)", host.mac)
    return host


# Seconds a thread holds the GIL at most while another waits for it (CPython's default:
# 0.005): the event loop's wait after each socket call or registry read.
SWITCH_INTERVAL = 0.0005

# Times a boot config is rendered again when its host changed between the read it was
# rendered from and the write that signals the host; then the host is signalled as it is.
RENDER_ATTEMPTS = 3


@dataclass(frozen=True)
class _Rendered:
    """A cached boot config: the MAC its path named (None: a catch-all path) and the
    config. Cached under that host's revision (None: no such host)."""

    mac: str | None
    config: render.BootConfig


@dataclass(frozen=True)
class _Render:
    """A step of ``_serving``: render the config now (``host``: read in this request)."""

    host: Host | None


@dataclass(frozen=True)
class _Signal:
    """A step of ``_serving``: mark ``mac`` signalled, if it is still as ``seen`` (None:
    as it is); what ``Registry.mark_signalled`` returns is sent back."""

    mac: str
    seen: Host | None


Serving = Generator[_Render | _Signal, Any, str | None]


def _serving(
    registry: Registry, relative: str, settings: ServerSettings, via: render.Via
) -> Serving:
    """How a boot config is served, once for both callers (``boot_config`` on TFTP's
    opener thread, ``boot_config_served`` on the event loop): the cached config's read
    here, and each render and signalling write a step the caller does its own way and
    sends the result of back."""
    for attempt in range(RENDER_ATTEMPTS):
        rendered, host = _cached_config(registry, relative, settings, via)
        if rendered is None:
            rendered, host = yield _Render(host)
            if rendered is None:
                return None
        config = rendered.config
        if host is not None:
            registry.served(host.mac)  # this server is on its segment (``segments``)
        if config.mac is None or config.action is not Action.INSTALL or host is None:
            return config.text
        last = attempt == RENDER_ATTEMPTS - 1
        if (yield _Signal(config.mac, None if last else host)) is not None:
            return config.text
    raise AssertionError("unreachable: the last attempt signals unconditionally")


def boot_config(
    registry: Registry,
    path: str,
    settings: ServerSettings,
    unknown: UnknownGate,
    via: render.Via = "tftp",
) -> str | None:
    """The boot config for a TFTP/HTTP ``path``, or None if ``path`` names none. Blocks.

    Serving an install config (``decide`` said install: a registered host whose
    netboot is armed, with a profile and a token) marks the host signalled. The
    decision is made once, by the renderer, and comes back with the text. An unknown
    MAC that may not be registered now raises RegistrationRefused. ``via``: how the
    boot loader asked for it (``render.boot_files``).

    Rendered once per host state: the config is cached (``registry.renders``) under
    the path, ``via``, the settings and the revision of the host the path names; each request
    reads that host once, and serves the cached config only if the revision read is
    the one it was rendered at. The signalling (and the ticket hand-out) happens on
    every install config served, cached or not.
    """
    relative = path.lstrip("/")
    steps = _serving(registry, relative, settings, via)
    result: object = None  # what the last step gave, sent back to _serving
    while True:
        try:
            step = steps.send(result)
        except StopIteration as done:
            return cast("str | None", done.value)
        if isinstance(step, _Render):
            result = _render_config(registry, relative, settings, unknown, step.host, via=via)
        else:
            result = registry.mark_signalled(step.mac, step.seen)


def boot_config_cached(
    registry: Registry, path: str, settings: ServerSettings, via: render.Via = "tftp"
) -> str | None:
    """``boot_config``'s answer for ``path`` when the render cache holds it at its host's
    revision and serving it writes nothing (no install config: that one signals its host):
    one read of the host on the caller's own connection (WAL: never waits for a writer),
    nothing rendered. None: ask ``boot_config``. (TFTP's loop answers with it itself.)"""
    rendered, host = _cached_config(registry, path.lstrip("/"), settings, via)
    if rendered is None:
        return None
    config = rendered.config
    if config.mac is not None and config.action is Action.INSTALL and host is not None:
        return None
    if host is not None:
        registry.served(host.mac)  # this server is on its segment (``segments``)
    return config.text


def _cache_key(relative: str, settings: ServerSettings, via: render.Via) -> tuple[object, ...]:
    """What a boot config is cached under besides its host's revision: everything else
    ``render.config_for_path`` reads (the path, how it was asked for, the settings)."""
    return ("boot-config", relative, via, settings)


def _cached_config(
    registry: Registry, relative: str, settings: ServerSettings, via: render.Via
) -> tuple[_Rendered | None, Host | None]:
    """The cached config of ``relative`` if it was rendered at the revision its host has
    now (one read of that host), else None; and that host as read (None: none)."""
    host, found = None, registry.renders.peek(_cache_key(relative, settings, via))
    if found is None:
        return None, None
    revision, rendered = found
    if rendered.mac is not None:
        host = registry.get_host(rendered.mac)
    if revision != (None if host is None else host.revision):
        return None, host
    unknown = host is None and rendered.mac is not None  # an unknown MAC, to register?
    if unknown and settings.unknown_policy is UnknownPolicy.INSTALL:
        return None, None
    return rendered, host


def _render_config(
    registry: Registry,
    relative: str,
    settings: ServerSettings,
    unknown: UnknownGate,
    host: Host | None,
    *,
    via: render.Via,
) -> tuple[_Rendered | None, Host | None]:
    """``relative``'s config rendered now (``host``: the host it names, read already in
    this request), and the host it was rendered from."""
    looked: dict[str, Host | None] = {}
    base = lookup_for(registry, settings, unknown)

    def lookup(mac: str) -> tuple[Host | None, Profile | None]:
        found: tuple[Host | None, Profile | None]
        if host is not None and host.mac == mac:
            found = host, registry.get_profile(host.profile)
        else:
            found = base(mac)
        looked[mac] = found[0]
        return found

    config = render.config_for_path(relative, lookup, settings, via)
    if config is None:
        return None, None
    mac = next(iter(looked), None)
    rendered, used = _Rendered(mac, config), looked.get(mac) if mac is not None else None
    revision = None if used is None else used.revision
    registry.renders.put(_cache_key(relative, settings, via), revision, rendered)
    return rendered, used


async def boot_config_served(ctx: Context, path: str, via: render.Via) -> str | None:
    """``boot_config`` for the HTTP routes: the cached config's read on the loop's own
    connection (WAL: it never waits for a writer), a render on a worker thread and the
    signalling write on the writer thread."""
    registry, settings, relative = ctx.registry, ctx.settings, path.lstrip("/")
    steps = _serving(registry, relative, settings, via)
    result: object = None  # what the last step gave, sent back to _serving
    while True:
        try:
            step = steps.send(result)
        except StopIteration as done:
            return cast("str | None", done.value)
        if isinstance(step, _Render):
            result = await blocking(
                functools.partial(_render_config, via=via),
                registry,
                relative,
                settings,
                ctx.unknown,
                step.host,
            )
        else:
            result = await http_api.host_writing(ctx, registry.mark_signalled, step.mac, step.seen)


# -- boot routes --------------------------------------------------------------------


async def answer_file(request: web.Request) -> web.StreamResponse:
    """``GET /answerfile/<mac>`` with ``Authorization: Bearer <install key>``: the host's
    rendered answer file, for the installer that enrolled that key (docs/protocol.md)."""
    ctx = context(request)
    try:
        mac = normalise_mac(request.match_info["mac"])
    except InputError as exc:
        return error(400, str(exc))
    # The key first, by its keyed hash: an unknown MAC and a wrong key get the same
    # answer, so the route does not tell who is registered.
    given = http_edge.bearer(request)
    # One indexed read on this thread's connection (WAL: it never waits for a writer).
    host = ctx.registry.host_by_install_key(given) if given else None
    if host is None or host.mac != mac:
        return error(
            401,
            f"the answer file of {mac} needs Authorization: Bearer <the install key its "
            f"installer enrolled with POST /api/v1/hosts/{mac}/enrol>",
            **{"WWW-Authenticate": "Bearer"},
        )
    # Rendered once per host state: everything else it reads (the profile, the settings
    # and repositories in the registry) renews the host's revision when it changes.
    key = ("answer-file", mac, ctx.settings, ctx.repo_url)
    text = ctx.registry.renders.get(key, host.revision)
    if text is None:
        try:
            text = await blocking(_answer_file, ctx, host)
        except InputError as exc:  # unregistered version, invalid answer file, no profile
            # Not the installer's mistake, nor one that a retry cures: the operator's (a
            # profile, a host's variables, a version not registered). A 409 names it, and
            # the installer stops and reports it failed at once (4xx: no retries).
            said = " ".join(exc.problems)
            log.warning("answer file of %s cannot be served: %s", mac, said)
            return error(
                409,
                f"the answer file of {mac} cannot be made: {said} (the operator's to fix: "
                f"`netinstall answerfile validate --host {mac}` says the same)",
            )
        ctx.registry.renders.put(key, host.revision, text)
    # The install's "answer file fetched" milestone, once: a re-fetch costs one read.
    if not ctx.registry.answer_file_noted(host):
        await http_api.host_writing(ctx, ctx.registry.note_answer_file, host)
    return web.Response(text=text, content_type="application/xml")


def _answer_file(ctx: Context, host: Host) -> str:
    """``host``'s answer file rendered now (InputError naming what is wrong). Blocks."""
    profile = ctx.registry.get_profile(host.profile)
    if profile is None:
        raise InputError(f"host {host.mac} has profile {host.profile!r}, which does not exist")
    repo_url = ctx.repository_url_for(host, profile)
    try:
        return render.answer_file(host, profile, ctx.settings, repo_url)
    except jinja2.TemplateError as exc:
        raise InputError(
            f"the answer-file template of profile {profile.name!r} does not work: {exc}"
        ) from exc


async def _config(request: web.Request, path: str, via: render.Via = "tftp") -> web.StreamResponse:
    ctx = context(request)
    if ".." in path or "\0" in path:
        return error(400, f"path {loggable(path)!r} refused: it would leave the config tree")
    try:
        text = await boot_config_served(ctx, path, via)
    except BadMac as exc:  # the path names no machine: the client's mistake
        return error(400, f"{loggable(path)}: {exc}")
    except RegistrationRefused as exc:  # logged once a burst by the gate
        return error(exc.status, str(exc), **{"Retry-After": str(exc.retry_after)})
    except (InputError, jinja2.TemplateError) as exc:  # a profile's: the operator's to fix
        return error(409, f"the boot config {path} cannot be rendered: {exc}")
    if text is None:
        return error(404, f"{path} is not a boot config this server renders")
    return web.Response(text=text, content_type="text/plain")


async def boot_tree_config(request: web.Request) -> web.StreamResponse:
    """``GET /boot/pxelinux.cfg/<name>``, ``/boot/grub/<name>``: the boot configs of loaders
    that came over HTTP (pxelinux.0 by URL through iPXE, UEFI HTTP Boot's GRUB), which look
    for them beside themselves; rendered with HTTP URLs (``render.boot_files``). A name that
    is no config is a file of the netboot tree, as under the rest of ``/boot/``."""
    response = await _config(request, request.match_info["path"], "http")
    return await http_files.boot_file(request) if response.status == 404 else response


async def http_boot_loader(request: web.Request) -> web.StreamResponse:
    """``GET /http-boot/grubx64.efi``: UEFI HTTP Boot's GRUB (``grub_image.build_http_grub``)."""
    loader = context(request).http_boot_loader
    if loader is None or not loader.is_file():
        return error(
            404,
            "this server offers no UEFI HTTP Boot: it builds the loader only with --dhcp full"
            " and GRUB's modules (registry setting grub_modules)",
        )
    return web.FileResponse(loader)


async def ipxe_script(request: web.Request) -> web.StreamResponse:
    """``GET /ipxe/<mac>``: the iPXE script (fetching an install script signals the host)."""
    try:
        mac = normalise_mac(request.match_info["mac"])
    except InputError as exc:
        return error(400, str(exc))
    return await _config(request, f"ipxe/{mac}")


async def boot_config_file(request: web.Request) -> web.StreamResponse:
    """``GET /config/<path>``: the boot configs TFTP serves, for boot loaders that read
    them over HTTP (iPXE's SAN chain loads ``xen-efi/<mac>.cfg`` so). Anyone may read a
    boot config, as over TFTP: the install token in it only enrols a key."""
    return await _config(request, request.match_info["path"])


async def operator_boot_config(call: http_edge.Call[NoBody]) -> web.StreamResponse:
    """A boot config as TFTP serves it (a host's install config carries its install
    token), for tools that stand in for the firmware: the lab's user-mode network."""
    return await _config(call.request, call.request.match_info["path"])


# The API routes declared here rather than in ``http_api`` (they render boot configs).
BOOT_API = (
    http_edge.Route("GET", "/api/v1/boot-configs/{path:.+}", operator_boot_config,
                    http_edge.Caller.OPERATOR, "a boot config as TFTP serves it",
                    raw_reply="text/plain", refusals=(404,)),
)  # fmt: skip


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Router refusals as ``{"error": ...}``; an unexpected exception is a logged 500.

    A request whose client has gone already (it gave up waiting and closed the
    connection) is not served: nobody would read the reply, and a client that gave up
    sends the request again. (A client that goes later cancels its handler:
    ``HttpServer`` runs aiohttp with ``handler_cancellation``, so registry work still
    queued for it is never done.)"""
    transport = request.transport
    if transport is None or transport.is_closing():
        log.info("%s %s: not served, its client went away", request.method, loggable(request.path))
        return error(503, "not served: the client went away")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 405:
            allowed = exc.headers.get("Allow", "")
            return error(
                405, f"{request.method} is not allowed here; allowed: {allowed}", Allow=allowed
            )
        if exc.status == 404:
            return error(404, f"no such resource: {loggable(request.path)}")
        raise
    except asyncio.CancelledError:
        transport = request.transport
        if transport is None or transport.is_closing():  # handler_cancellation: one line
            log.info(
                "%s %s: dropped, its client went away before its reply",
                request.method,
                loggable(request.path),
            )
        raise
    except ConnectionResetError:
        raise
    except Exception as exc:
        outage = http_edge.unavailable(request.method, loggable(request.raw_path), exc)
        if outage is not None:
            return outage
        log.exception("internal error serving %s %s", request.method, loggable(request.raw_path))
        return error(500, "internal error; the server's log has the details")


class _OneLine(logging.Filter):
    """aiohttp's own refusals (a malformed request line or header, a client gone before its
    reply) as one line each, not a traceback: on a shared network they are routine."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | ConnectionError):
            said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            record.msg = f"{record.getMessage()}: {said}"
            record.args = ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_protocol_log = logging.getLogger("netinstall.http.protocol")
_protocol_log.addFilter(_OneLine())

# What every connection of the server gets (aiohttp's RequestHandler arguments). Why the
# keep-alive timeout: aiohttp has no header timeout of its own, but it arms its keep-alive
# timer when a connection opens and after each reply, and on expiry closes a connection
# that has not finished sending the next request's line and headers; at HEADER_TIMEOUT it
# is the header timeout too, with no wrapper of our own around aiohttp's protocol.
HANDLER_ARGS = {
    "keepalive_timeout": HEADER_TIMEOUT,
    "lingering_time": LINGER,
    "auto_decompress": False,  # bodies as sent: http_edge refuses a Content-Encoding
    "logger": _protocol_log,
}


def make_app(ctx: Context) -> web.Application:
    """The server's routes; every ``/api/v1`` one declared in ``http_api.API`` and its
    caller checked by its own wrapper (``http_edge.caller_check``) before its handler runs."""
    app = web.Application(middlewares=[json_errors], handler_args=HANDLER_ARGS)
    app[CONTEXT] = ctx
    # Before /boot/{path}: aiohttp takes the first route that matches.
    app.router.add_get(r"/boot/{path:(?:pxelinux\.cfg|grub)/[^/]+}", boot_tree_config)
    app.router.add_get("/http-boot/grubx64.efi", http_boot_loader)
    http_files.add_routes(app)
    http_edge.add_routes(app, http_api.API + BOOT_API + BMC_API + UPDATE_API)
    app.router.add_get("/answerfile/{mac}", answer_file)
    app.router.add_get("/ipxe/{mac}", ipxe_script)
    app.router.add_get("/config/{path:.+}", boot_config_file)
    http_ui.add_routes(app)  # the web console, /ui/
    return app


class HttpServer:
    """aiohttp in a background thread. Binds in ``__init__`` (``.port`` is known at once,
    errors raise there); ``start()`` serves, ``stop()`` stops and releases the port."""

    def __init__(
        self,
        registry_dir: Path,
        settings: ServerSettings,
        netboot: Path | None,
        repo: Path | None,
        *,
        host: str,
        port: int,
        repo_url: str | None = None,
        unknown: UnknownGate | None = None,
        registry: Registry | None = None,
    ) -> None:
        """``repo_url``: the repository's URL for answer files when ``repo`` is not served
        here (the operator named a URL); default ``<http_base>/repo/``. ``unknown``: the
        gate of unknown-MAC registrations, shared with TFTP (default: the default limits).
        ``registry``: the open registry of ``registry_dir`` to share (its one writer, its
        render cache) with the TFTP server; its owner closes it. Default: opened here."""
        self.unknown = unknown or UnknownGate(UnknownLimits())
        self._shared = registry
        self.registry_dir = Path(registry_dir)
        self.repo_url = repo_url
        self.netboot = netboot
        self.repo = repo
        self.host = host
        self._settings = settings
        self.http_boot_loader: Path | None = None  # UEFI HTTP Boot's GRUB, set before start
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock: socket.socket | None = socket.create_server(
            (host, port), family=family, backlog=256
        )
        self._port = int(self._sock.getsockname()[1])
        grub_tcp.save_syns(self._sock)  # which connections named no MSS (GRUB's): grub_tcp.py
        self._tls: tuple[socket.socket, ssl.SSLContext] | None = None  # listen_tls
        self.operator_base: str | None = None  # the TLS listener's URL, set before start
        self._ctx: Context | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def tls_port(self) -> int | None:
        """The TLS listener's port (None: no TLS)."""
        return None if self._tls is None else int(self._tls[0].getsockname()[1])

    def listen_tls(self, context: ssl.SSLContext, port: int) -> None:
        """Bind the TLS listener (``http_tls``) on this server's address; it serves the
        same routes once started, and operator routes only there (``operator_base``)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, port), family=family, backlog=256)
        self._tls = (sock, context)

    @property
    def settings(self) -> ServerSettings:
        return self._settings

    @settings.setter
    def settings(self, value: ServerSettings) -> None:
        """Replace the settings (e.g. ``http_base`` once the port is known); next request on."""
        self._settings = value
        if self._ctx is not None:
            self._ctx.settings = value

    def start(self) -> None:
        if self._sock is None:
            raise NetinstallError("this HTTP server was stopped; make a new one")
        # The event loop's thread gives up the GIL at every socket call and registry read;
        # with the writer and TFTP threads busy it would wait up to the default 5 ms to
        # get it back, on every request. Process-wide, hence here: the server's process.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        # What the process holds now (modules, the registry, the app) is never garbage:
        # kept out of the collector's full passes, which otherwise walk it all again and
        # again while requests wait (tens of milliseconds at a p99).
        gc.freeze()
        shared = shared_dir.shared(self.registry_dir)  # before the registry: nothing to close
        registry = self._shared or Registry.open(self.registry_dir)
        self._ctx = Context(
            registry=registry,
            registry_dir=self.registry_dir,
            settings=self._settings,
            netboot=self.netboot,
            repo=self.repo,
            repo_url=self.repo_url,
            unknown=self.unknown,
            http_boot_loader=self.http_boot_loader,
            operator_base=self.operator_base if self._tls is not None else None,
            shared_dir=shared,
        )
        # handler_cancellation: a client that closes its connection cancels its request's
        # handler, and with it the registry work still queued for it (the writer thread's
        # queue under load): work done for a client that gave up is done twice once it
        # asks again (``json_errors``).
        self._runner = web.AppRunner(
            make_app(self._ctx),
            access_log_class=_AccessLog,
            access_log=log,
            shutdown_timeout=2.0,
            handler_cancellation=True,
        )
        loop = self._loop = asyncio.new_event_loop()
        sock, runner = self._sock, self._runner
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
            if self._tls is not None:
                tls_sock, tls_context = self._tls
                site = web.SockSite(runner, tls_sock, ssl_context=tls_context)
                loop.run_until_complete(site.start())
        except BaseException:
            loop.close()
            if self._shared is None:
                registry.close()
            raise
        self._thread = threading.Thread(
            target=loop.run_forever, name="netinstall-http", daemon=True
        )
        self._thread.start()
        log.info(
            "http serving on %s:%d (base URL %s)", self.host, self.port, self._settings.http_base
        )

    def stop(self) -> None:
        """Finish or cut running requests (2 s at most), stop the loop, release the port."""
        loop, runner, thread = self._loop, self._runner, self._thread
        if loop is not None and runner is not None and thread is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
        self._loop = self._runner = self._thread = None
        if self._ctx is not None:
            if self._shared is None:
                self._ctx.registry.close()
            self._ctx = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._tls is not None:
            self._tls[0].close()
            self._tls = None

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
