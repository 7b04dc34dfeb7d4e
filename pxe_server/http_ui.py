"""HTTP, part 3: the operator's web console at ``/ui/`` (README "Web console").

Server-rendered pages (jinja2, autoescaped: whatever hosts send is shown as text) and
one small script of our own (``ui_static/ui.js``) that polls ``/ui/api/fleet`` every
two seconds and updates the rows it gets, so the fleet and a host's page follow
installs as they run without reloading. What the pages read is ``ui_view``'s.

Who may see what: nothing under ``/ui/`` but the login form (and its stylesheet)
without a session (``ui_sessions``): a page sends the browser to the login form, the
poll answers 401. The login form takes the API token and sets a session cookie
(HttpOnly, SameSite=Strict, Path=/ui, Secure under TLS); the token never goes back to
the browser. With TLS on (``http_tls``) the console is served on the TLS listener only
and the plain port answers 403 naming the https URL, before it reads anything sent.

Every state-changing request (login, logout, an action) must come from the console's
own origin (its ``Origin``, else its ``Referer``, names this server as the browser
reached it) and, but the login, carry the session's CSRF token (form field ``csrf`` or
header ``X-CSRF-Token``): 403 otherwise. Form bodies are read through the API's bounds
(``http_edge.body_chunks``: ``MAX_FORM`` bytes, the slow-body limits). Every reply
forbids framing and caching and carries a Content-Security-Policy that allows no
inline script or style and nothing from elsewhere.

The poll is a short GET with no body, answered from the registry (any server's hosts'
reports) at once: none of the slow-client limits (``limits``) applies to it, and a page
that polls every two seconds keeps its keep-alive connection well inside the header
timeout.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from common.errors import InputError
from common.protocol.codec import encode
from common.protocol.messages import PowerAction, PowerRequest
from pxe_server import bmc_control, http_api, http_edge, log_bundles, ui_view
from pxe_server.http_files import Context, blocking, context, error
from pxe_server.model import RebootPolicy, State, Work, normalise_mac
from pxe_server.registry import Registry, UnknownHost
from pxe_server.timeline import duration_text
from pxe_server.ui_sessions import LoginThrottle, Session, Sessions

log = logging.getLogger("netinstall.http")

UI = "/ui"
COOKIE = "netinstall_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
MAX_FORM = 16 * 1024  # bytes of a form body
MAX_TOKEN = 512  # characters of an API token typed into the login form

TEMPLATES = Path(__file__).with_name("templates") / "ui"
STATIC = Path(__file__).with_name("ui_static")
ASSETS = {"ui.css": "text/css", "ui.js": "text/javascript"}  # behind a session
LOGIN_ASSET = "login.css"  # the login form's own stylesheet: served to anyone

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# What each action does, as its confirmation page asks and its result says.
ACTIONS = {
    "rearm": ("Rearm", "network-install the host again: netboot armed, a new install token"),
    "upgrade": ("Upgrade", "the host's agent upgrades it to the version chosen"),
    "restore": ("Restore", "the host's agent restores it from its backup partition"),
}
# The host's power, through its BMC (``bmc_control``): offered when the host has one.
POWER_ACTIONS = {
    "power-on": ("Power on", "power the host on through its BMC"),
    "power-off": (
        "Power off",
        "cut the host's power through its BMC at once (no orderly shutdown)",
    ),
    "power-cycle": ("Power cycle", "power the host off and on again through its BMC"),
    "rearm-power": (
        "Rearm and boot",
        "network-install the host again and boot it now: netboot armed, a new install token, "
        "its next boot set to the network once through its BMC, then powered on (or cycled "
        "if it is on)",
    ),
}
# An upgrade or restore given to a host with a BMC: what its power was
# (``bmc_control.Powered``).
POWERED: dict[str, str] = {
    bmc_control.Powered.WAS_OFF: "It was off: powered on through its BMC.",
    bmc_control.Powered.ON: "Its BMC says it is on.",
    bmc_control.Powered.FAILED: (
        "Its BMC could not power it on (the server's log says why); power it on."
    ),
}
DONE = {
    "power-on": "Power on asked of the BMC; it said so.",
    "power-off": "Power off asked of the BMC; it said so.",
    "power-cycle": "Power cycle asked of the BMC; it said so.",
    "rearm-power": "Rearmed, its next boot set to the network, and booted through its BMC.",
    "rearm": "Rearmed: the host installs from the network at its next boot.",
    "upgrade": "Upgrade assigned: the agent takes it at its next check-in.",
    "restore": "Restore assigned: the agent takes it at its next check-in.",
}


def environment() -> jinja2.Environment:
    """The pages' jinja2: autoescaped, StrictUndefined."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = duration_text
    env.filters["when"] = ui_view.when
    return env


@dataclass
class Console:
    """The console's state in one server process (kept in the app, not the module)."""

    sessions: Sessions = field(default_factory=Sessions)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    templates: jinja2.Environment = field(default_factory=environment)


CONSOLE = web.AppKey("ui_console", Console)


def _secured(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _page(request: web.Request, name: str, status: int = 200, **values: Any) -> web.StreamResponse:
    """A small page (a form, a refusal), rendered on the loop."""
    text = request.app[CONSOLE].templates.get_template(name).render(**values)
    return _secured(web.Response(text=text, status=status, content_type="text/html"))


async def _big_page(request: web.Request, name: str, **values: Any) -> web.StreamResponse:
    """A page that grows with the fleet (10,000 hosts' rows: 0.4 s), rendered off the
    loop, so that file transfers and boot configs never wait for it."""
    template = request.app[CONSOLE].templates.get_template(name)
    text = await blocking(template.render, **values)
    return _secured(web.Response(text=text, content_type="text/html"))


def _problem(
    request: web.Request, status: int, message: str, session: Session | None
) -> web.StreamResponse:
    return _page(request, "error.html.j2", status, message=message, session=session)


def _elsewhere(request: web.Request, ctx: Context) -> web.StreamResponse | None:
    """On the plain port of a server with TLS on: where the console is (403, nothing of
    the request read); None on the listener that serves the console."""
    if ctx.operator_base is None or request.secure:
        return None
    target = html.escape(f"{ctx.operator_base}{UI}/")
    text = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<title>netinstall: use HTTPS</title><link rel="icon" href="data:,"></head>'
        "<body><p>This server serves its web "
        "console over HTTPS only, so that the API token never crosses the network in clear: "
        f'<a href="{target}">{target}</a></p></body></html>'
    )
    return _secured(web.Response(text=text, status=403, content_type="text/html"))


def see_other(location: str) -> web.Response:
    """303 to ``location`` (a console path), with the console's headers."""
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


def own_origin(request: web.Request) -> str:
    """This server as the browser reached it: ``scheme://host[:port]``."""
    return f"{request.scheme}://{request.host}"


def same_origin(request: web.Request) -> bool:
    """Whether a state-changing request comes from the console's own pages: its
    ``Origin`` names this server, or (no Origin) its ``Referer`` is one of our URLs."""
    mine = own_origin(request)
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == mine
    referer = request.headers.get("Referer")
    return referer is not None and referer.startswith(mine + "/")


async def read_form(request: web.Request) -> dict[str, str]:
    """A urlencoded form body, ``MAX_FORM`` bytes at most (InputError otherwise); each
    field's first value."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise InputError("a form must be sent as application/x-www-form-urlencoded")
    http_edge.check_not_encoded(request)
    data = b"".join([c async for c in http_edge.body_chunks(request, MAX_FORM, "a form")])
    try:
        fields = urllib.parse.parse_qs(data.decode(), max_num_fields=32, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise InputError("the form is not UTF-8 urlencoded fields") from None
    return {key: values[0] for key, values in fields.items()}


Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def _session(request: web.Request, ctx: Context) -> Session | None:
    """The request's live session; None without one, or when the API token was rotated
    since its login (that ends it). One indexed read on this thread's registry connection
    (WAL: it never waits for a writer), as the API's own token check."""
    sessions, cookie = request.app[CONSOLE].sessions, request.cookies.get(COOKIE)
    session = sessions.get(cookie)
    if session is not None and not session.stamp_matches(ctx.registry.api_token_stamp()):
        sessions.end(cookie)
        return None
    return session


def guarded(
    handler: Handler, *, poll: bool = False
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` behind the console's checks: the TLS listener (with TLS on), a live
    session (pages: to the login form; the poll: 401), and for a POST its origin and the
    session's CSRF token (403). A refusal of the handler's (InputError) is one sentence
    on a page, or JSON for the poll."""

    @functools.wraps(handler)
    async def serve(request: web.Request) -> web.StreamResponse:
        ctx = context(request)
        elsewhere = _elsewhere(request, ctx)
        if elsewhere is not None:
            return elsewhere
        session = _session(request, ctx)
        if session is None:
            if poll:
                return _secured(error(401, "no session: log in at /ui/login"))
            if request.method != "GET":
                return _problem(request, 403, "Your session has ended; log in again.", None)
            target = urllib.parse.quote(request.rel_url.path_qs, safe="")
            return see_other(f"{UI}/login?next={target}")
        try:
            if request.method == "POST":
                if not same_origin(request):  # refused before its body is read
                    return _problem(request, 403, NOT_OURS, session)
                form = await read_form(request)
                given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
                if not session.csrf_matches(given):
                    return _problem(request, 403, NOT_OURS, session)
                request[FORM] = form
            return _secured(await handler(request, session))
        except http_edge.BodyTooLarge as exc:
            return _problem(request, 413, str(exc), session)
        except (http_edge.SlowBody, http_edge.ClientGone) as exc:
            reply = _problem(request, 400, str(exc), session)
            reply.force_close()
            return reply
        except InputError as exc:
            if poll:
                return _secured(http_edge.refusal(exc))
            status = 404 if isinstance(exc, UnknownAction) else http_edge.refusal(exc).status
            return _problem(request, status, " ".join(exc.problems), session)

    return serve


FORM = web.RequestKey("ui_form", dict)
NOT_OURS = (
    "Refused: the request did not come from this console's own page (its origin or CSRF "
    "token); reload the page and try again."
)


# -- login -------------------------------------------------------------------------------


def _next_of(value: str | None) -> str:
    """Where to go after the login: a console path only (never another site)."""
    if value and value.startswith(f"{UI}/") and not any(s in value for s in ("\\", "..", "//")):
        return value
    return f"{UI}/"


async def login_form(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    elsewhere = _elsewhere(request, ctx)
    if elsewhere is not None:
        return elsewhere
    if _session(request, ctx) is not None:
        return see_other(_next_of(request.query.get("next")))
    return _page(request, "login.html.j2", next=_next_of(request.query.get("next")), said=None)


async def login(request: web.Request) -> web.StreamResponse:
    """The API token for a session: throttled per address, from our own form only."""
    ctx, console = context(request), request.app[CONSOLE]
    elsewhere = _elsewhere(request, ctx)
    if elsewhere is not None:
        return elsewhere
    address = request.remote or "unknown"
    wait = console.throttle.wait(address)
    if wait > 0:
        said = f"Too many failed logins from {address}; wait {wait:.0f} s."
        reply = _page(request, "login.html.j2", 429, next=f"{UI}/", said=said)
        reply.headers["Retry-After"] = str(int(wait) + 1)
        return reply
    if not same_origin(request):
        return _problem(request, 403, "Refused: the login did not come from this console's "
                        "own login form.", None)  # fmt: skip
    try:
        form = await read_form(request)
    except (InputError, http_edge.BodyTooLarge, http_edge.SlowBody, http_edge.ClientGone):
        return _problem(request, 400, "The login form could not be read; try again.", None)
    token = form.get("token", "").strip()
    target = _next_of(form.get("next"))
    right = 0 < len(token) <= MAX_TOKEN and await blocking(ctx.registry.api_token_matches, token)
    if not right:
        console.throttle.failed(address)
        said = "Wrong API token: the server directory's api-token file holds it."
        return _page(request, "login.html.j2", 403, next=target, said=said)
    console.throttle.succeeded(address)
    stamp: str | None = await blocking(ctx.registry.api_token_stamp)
    session_id, _ = console.sessions.create(stamp or "")
    reply = see_other(target)
    reply.set_cookie(COOKIE, session_id, path=UI, httponly=True, samesite="Strict",
                     secure=request.secure)  # fmt: skip
    return reply


async def logout(request: web.Request, session: Session) -> web.StreamResponse:
    request.app[CONSOLE].sessions.end(request.cookies.get(COOKIE))
    reply = see_other(f"{UI}/login")
    reply.del_cookie(COOKIE, path=UI)
    return reply


async def login_asset(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    elsewhere = _elsewhere(request, ctx)
    if elsewhere is not None:
        return elsewhere
    return _asset(LOGIN_ASSET, "text/css")


def _asset(name: str, media: str) -> web.StreamResponse:
    reply = web.FileResponse(STATIC / name, headers={"Content-Type": media})
    return _secured(reply)


async def asset(request: web.Request, session: Session) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        return _problem(request, 404, f"no such file: {name[:64]}", session)
    return _asset(name, ASSETS[name])


# -- pages -------------------------------------------------------------------------------


def _poll_url(filters: ui_view.Filters) -> str:
    query = filters.query()
    return f"{UI}/api/fleet" + (f"?{urllib.parse.urlencode(query)}" if query else "")


def _page_url(filters: ui_view.Filters, **changed: str | int) -> str:
    """The fleet page with ``filters``, ``changed`` values instead of theirs."""
    query = filters.query(**changed)
    return f"{UI}/" + (f"?{urllib.parse.urlencode(query)}" if query else "")


async def fleet_page(request: web.Request, session: Session) -> web.StreamResponse:
    filters = ui_view.Filters.of(request.query)
    found = await blocking(ui_view.fleet, context(request).registry, filters)
    return await _big_page(request, "fleet.html.j2", session=session, fleet=found, filters=filters,
                 poll_url=_poll_url(filters), states=[s.value for s in State],
                 blank=ui_view.BLANK, page_url=functools.partial(_page_url, filters),
                 page_rows=found.page_rows)  # fmt: skip


async def fleet_changes(request: web.Request, session: Session) -> web.StreamResponse:
    """``GET /ui/api/fleet?cursor=N[&full=1][&state=..&profile=..&pool=..&mac=..]``."""
    filters = ui_view.Filters.of(request.query)
    text = request.query.get("cursor", "0")
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise InputError(f"cursor {text[:32]!r}: expected an event id (0 or more)")
    full = request.query.get("full") == "1"
    body = await blocking(_polled, context(request).registry, int(text), filters, full)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def _polled(registry: Registry, cursor: int, filters: ui_view.Filters, full: bool) -> bytes:
    """The poll's answer, read and encoded off the loop (a full one: megabytes)."""
    found = ui_view.poll(registry, cursor, filters, full=full)
    return json.dumps(encode(found.record(time.time()))).encode()


def _mac(request: web.Request) -> str:
    return normalise_mac(request.match_info["mac"])


async def host_page(request: web.Request, session: Session) -> web.StreamResponse:
    ctx, mac = context(request), _mac(request)
    logs = await blocking(_logs, ctx, mac)
    page = await blocking(ui_view.host_page, ctx.registry, mac, logs, time.time())
    done = _done(request.query)
    filters = ui_view.Filters(mac=mac)
    return await _big_page(request, "host.html.j2", session=session, page=page, done=done,
                 poll_url=_poll_url(filters), actions=ACTIONS,
                 power_actions=POWER_ACTIONS)  # fmt: skip


def _logs(ctx: Context, mac: str) -> list[tuple[str, int, float]]:
    kept = log_bundles.bundles(log_bundles.log_dir(ctx.shared, mac))
    return [(b.name, b.bytes, b.time) for b in kept]


async def host_log(request: web.Request, session: Session) -> web.StreamResponse:
    """One of a host's log bundles, from the shared directory, as a download."""
    ctx, mac, name = context(request), _mac(request), request.match_info["name"]
    path = await blocking(log_bundles.bundle_file, ctx.shared, mac, name)
    if path is None:
        return _problem(request, 404, f"Host {mac} has no log bundle {name[:64]!r}.", session)
    headers = {
        "Content-Type": "application/x-bzip2",
        "Content-Disposition": f'attachment; filename="{mac.replace(":", "-")}-{name}"',
    }
    return web.FileResponse(path, chunk_size=1 << 18, headers=headers)


class UnknownAction(InputError):
    """No action of that name (a 404)."""


def _action(request: web.Request) -> str:
    action = request.match_info["action"]
    if action not in ACTIONS and action not in POWER_ACTIONS:
        names = ", ".join([*ACTIONS, *POWER_ACTIONS])
        raise UnknownAction(f"no action {action[:32]!r}; the actions: {names}")
    return action


async def confirm_action(request: web.Request, session: Session) -> web.StreamResponse:
    """The confirmation step of an action: what it does, and the form that does it."""
    ctx, mac, action = context(request), _mac(request), _action(request)
    page = await blocking(ui_view.host_page, ctx.registry, mac, [], time.time())
    return _page(request, "confirm.html.j2", session=session, page=page, action=action,
                 what={**ACTIONS, **POWER_ACTIONS}[action],
                 policies=[p.value for p in RebootPolicy])  # fmt: skip


async def take_action(request: web.Request, session: Session) -> web.StreamResponse:
    """The action confirmed: the same registry calls as the API's routes make."""
    ctx, mac, action, form = context(request), _mac(request), _action(request), request[FORM]
    registry = ctx.registry
    if registry.get_host(mac) is None:
        raise UnknownHost(f"no host {mac} in the registry")
    if action in POWER_ACTIONS:
        # bmc_control's own check, before anything is written: no BMC, or a password this
        # server's key cannot open, is refused before a rearm.
        await blocking(bmc_control.access, registry, mac)
        if action == "rearm-power":
            await http_api.writing(ctx, registry.rearm, mac)
            asked = PowerRequest(PowerAction.BOOT, network_once=True)
        else:
            asked = PowerRequest(PowerAction(action.removeprefix("power-")))
        await blocking(bmc_control.power, registry, mac, asked)  # BmcError: a 502 page
    elif action == "rearm":
        await http_api.writing(ctx, registry.rearm, mac)
    else:
        version = form.get("version") or None
        if action == "upgrade" and version is None:
            raise InputError("an upgrade needs a version: choose a registered repository")
        work = Work.UPGRADE if action == "upgrade" else Work.RESTORE
        reboot = form.get("reboot", RebootPolicy.AUTO.value)
        await http_api.writing(ctx, registry.assign_work, mac, work, version=version,
                               reboot=reboot)  # fmt: skip
        if registry.bmc(mac) is not None:  # agent work: a host that is off is powered on
            powered, said = await blocking(bmc_control.power_on_for_work, registry, mac)
            if powered is bmc_control.Powered.FAILED:
                log.warning("%s", said)
            return see_other(f"{UI}/hosts/{mac}?done={action}&power={powered.value}")
    return see_other(f"{UI}/hosts/{mac}?done={action}")


def _done(query: Mapping[str, str]) -> str | None:
    """What the action named in the query did, as the host's page says it."""
    said = DONE.get(query.get("done", ""))
    powered = POWERED.get(query.get("power", ""))
    return None if said is None else f"{said} {powered}" if powered else said


async def pools_page(request: web.Request, session: Session) -> web.StreamResponse:
    pools = await blocking(ui_view.pools_page, context(request).registry)
    return await _big_page(request, "pools.html.j2", session=session, pools=pools)


async def to_console(request: web.Request) -> web.StreamResponse:
    return see_other(f"{UI}/")


def add_routes(app: web.Application) -> None:
    """The console's routes, and its state (sessions, throttle, templates) in ``app``."""
    app[CONSOLE] = Console()
    router = app.router
    router.add_get(UI, to_console)
    router.add_get(f"{UI}/login", login_form)
    router.add_post(f"{UI}/login", login)
    router.add_get(f"{UI}/{LOGIN_ASSET}", login_asset)
    router.add_post(f"{UI}/logout", guarded(logout))
    router.add_get(f"{UI}/static/{{name}}", guarded(asset))
    router.add_get(f"{UI}/", guarded(fleet_page))
    router.add_get(f"{UI}/api/fleet", guarded(fleet_changes, poll=True))
    router.add_get(f"{UI}/pools", guarded(pools_page))
    router.add_get(f"{UI}/hosts/{{mac}}", guarded(host_page))
    router.add_get(f"{UI}/hosts/{{mac}}/logs/{{name}}", guarded(host_log))
    router.add_get(f"{UI}/hosts/{{mac}}/{{action}}", guarded(confirm_action))
    router.add_post(f"{UI}/hosts/{{mac}}/{{action}}", guarded(take_action))
