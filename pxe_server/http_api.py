"""HTTP, part 2: the JSON API under ``/api/v1/`` (docs/protocol.md, SPEC §9).

Operator calls (hosts: list, create, show, edit, delete, rearm, upgrade, restore; a
host's events) need ``Authorization: Bearer <the server's API token>``: missing 401,
wrong 403. Installer and first-boot calls (``POST .../events``, ``PUT .../logs``)
need the host's own install token or agent credential, the agent's check-in
(``POST .../checkin``) its agent credential: missing or wrong 401. No reply
carries a token or credential, except the agent credential in the reply to the
``running`` event. Errors are ``{"error": "<one sentence>"}``.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from common.errors import InputError
from pxe_server.checkin import (
    checkin_reply,
    multipath_report,
    reported_state,
    running_version,
)
from pxe_server.http_files import Context, blocking, context, error
from pxe_server.model import Event, Host, RebootPolicy, Work, mac_dashes, normalise_mac
from pxe_server.registry import TransitionRefused, UnknownHost
from pxe_server.secrets import shown_variables

log = logging.getLogger("netinstall.http")

MAX_LOG_BUNDLE = 64 * 1024 * 1024
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def host_json(host: Host) -> dict[str, Any]:
    """A host as the API shows it: everything but its secrets (passwords as <redacted>)."""
    return {
        "mac": host.mac,
        "name": host.name,
        "profile": host.profile,
        "variables": shown_variables(host.variables),
        "netboot_armed": host.netboot_armed,
        "state": host.state.value,
        "step": host.step,
        "progress": host.progress,
        "assigned_version": host.assigned_version,
        "running_version": host.running_version,
        "work": None if host.work is None else host.work.value,
        "reboot_policy": host.reboot_policy.value,
        "last_checkin": host.last_checkin,
        "facts": dict(host.facts),
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "time": event.time,
        "state": event.state.value,
        "step": event.step,
        "progress": event.progress,
        "message": event.message,
    }


def log_dir(registry_dir: Path, mac: str) -> Path:
    """Where a host's uploaded log bundles go: ``DIR/logs/<mac with dashes>/``."""
    return registry_dir / "logs" / mac_dashes(normalise_mac(mac))


def bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _operator(request: web.Request) -> web.Response | None:
    """None if the request carries the API token, else the refusal to send."""
    given = bearer(request)
    if given is None:
        return error(
            401, "this call needs Authorization: Bearer <the server's API token>", **_CHALLENGE
        )
    if not context(request).registry.api_token_matches(given):
        return error(403, "wrong API token; the server directory's api-token file holds it")
    return None


def _mac(request: web.Request) -> str:
    return normalise_mac(request.match_info["mac"])


def _refusal(exc: InputError) -> web.Response:
    message = " ".join(exc.problems)
    if isinstance(exc, UnknownHost):
        return error(404, message)
    if isinstance(exc, TransitionRefused):
        return error(409, message)
    return error(400, message)


async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise InputError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InputError(
            f"unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed))}"
        )
    return body


def _text(body: dict[str, Any], key: str, *, optional: bool = True) -> str | None:
    value = body.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InputError(f"field {key!r} must be a string")
    return value


def _variables(body: dict[str, Any]) -> dict[str, str]:
    value = body.get("variables") or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InputError('field "variables" must be an object of strings')
    return value


def _guarded(handler: Any) -> Any:
    """Turn InputError (bad MAC, bad field, refused transition) into 400/404/409."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            result: web.StreamResponse = await handler(request)
        except InputError as exc:
            return _refusal(exc)
        return result

    wrapper.__doc__ = handler.__doc__
    return wrapper


async def _host_or_404(ctx: Context, mac: str) -> Host:
    host = await blocking(ctx.registry.get_host, mac)
    if host is None:
        raise UnknownHost(f"no host {mac} in the registry")
    return host


@_guarded
async def list_hosts(request: web.Request) -> web.StreamResponse:
    if refused := _operator(request):
        return refused
    hosts = await blocking(context(request).registry.list_hosts)
    return web.json_response({"hosts": [host_json(h) for h in hosts]})


@_guarded
async def create_host(request: web.Request) -> web.StreamResponse:
    if refused := _operator(request):
        return refused
    body = await _body(request, {"mac", "profile", "name", "variables"})
    mac = normalise_mac(_text(body, "mac", optional=False) or "")
    host = await blocking(
        context(request).registry.add_host,
        mac,
        profile=_text(body, "profile") or "default",
        name=_text(body, "name"),
        variables=_variables(body),
    )
    return web.json_response(host_json(host), status=201)


@_guarded
async def show_host(request: web.Request) -> web.StreamResponse:
    if refused := _operator(request):
        return refused
    return web.json_response(host_json(await _host_or_404(context(request), _mac(request))))


@_guarded
async def edit_host(request: web.Request) -> web.StreamResponse:
    if refused := _operator(request):
        return refused
    ctx, mac = context(request), _mac(request)
    body = await _body(request, {"name", "profile", "variables"})
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = _text(body, "name")
    if "profile" in body:
        changes["profile"] = _text(body, "profile", optional=False)
    if "variables" in body:
        changes["variables"] = _variables(body)
    await _host_or_404(ctx, mac)
    host = await blocking(ctx.registry.update_host, mac, **changes)
    return web.json_response(host_json(host))


@_guarded
async def delete_host(request: web.Request) -> web.StreamResponse:
    if refused := _operator(request):
        return refused
    ctx, mac = context(request), _mac(request)
    await _host_or_404(ctx, mac)
    await blocking(ctx.registry.delete_host, mac)
    return web.json_response({"deleted": mac})


@_guarded
async def rearm_host(request: web.Request) -> web.StreamResponse:
    if refused := _operator(request):
        return refused
    ctx, mac = context(request), _mac(request)
    await _host_or_404(ctx, mac)
    return web.json_response(host_json(await blocking(ctx.registry.rearm, mac)))


async def _assign(request: web.Request, work: Work, fields: set[str]) -> web.StreamResponse:
    if refused := _operator(request):
        return refused
    ctx, mac = context(request), _mac(request)
    body = await _body(request, fields)
    version = _text(body, "version", optional=False) if "version" in fields else None
    reboot = _text(body, "reboot") or RebootPolicy.AUTO.value
    await _host_or_404(ctx, mac)
    host = await blocking(ctx.registry.assign_work, mac, work, version=version, reboot=reboot)
    return web.json_response(host_json(host))


@_guarded
async def upgrade_host(request: web.Request) -> web.StreamResponse:
    """``{"version": V, "reboot": "auto"|"manual"}``: the agent upgrades the host to V."""
    return await _assign(request, Work.UPGRADE, {"version", "reboot"})


@_guarded
async def restore_host(request: web.Request) -> web.StreamResponse:
    """``{"reboot": "auto"|"manual"}``: the agent restores the host's backup partition."""
    return await _assign(request, Work.RESTORE, {"reboot"})


@_guarded
async def list_events(request: web.Request) -> web.StreamResponse:
    if refused := _operator(request):
        return refused
    ctx, mac = context(request), _mac(request)
    await _host_or_404(ctx, mac)
    events = await blocking(ctx.registry.events, mac)
    return web.json_response({"events": [event_json(e) for e in events]})


async def _is_hosts(request: web.Request, host: Host, *, token: bool = True) -> bool:
    """Whether the request carries this host's agent credential (or, with ``token``, its
    install token): one indexed lookup by keyed hash each."""
    given, registry = bearer(request), context(request).registry
    lookups = (registry.host_by_token,) if token else ()
    for lookup in (*lookups, registry.host_by_agent_credential):
        found = await blocking(lookup, given) if given else None
        if found is not None and found.mac == host.mac:
            return True
    return False


_HOST_REFUSAL = (
    "this call needs Authorization: Bearer <the host's install token or agent credential>"
)


@_guarded
async def post_event(request: web.Request) -> web.StreamResponse:
    """An installer, first-boot or agent report (docs/protocol.md)."""
    ctx, mac = context(request), _mac(request)
    host = await _host_or_404(ctx, mac)
    if not await _is_hosts(request, host):
        return error(401, f"wrong or expired token; {_HOST_REFUSAL}", **_CHALLENGE)
    body = await _body(request, {"state", "step", "progress", "message", "facts"})
    state = _text(body, "state", optional=False)
    progress = body.get("progress")
    if progress is not None and (
        isinstance(progress, bool) or not isinstance(progress, int | float)
    ):
        raise InputError('field "progress" must be a number from 0 to 1')
    facts = body.get("facts")
    if facts is not None and not isinstance(facts, dict):
        raise InputError('field "facts" must be an object')
    _, reply = await blocking(
        ctx.registry.record_event,
        mac,
        state or "",
        step=_text(body, "step"),
        progress=progress,
        message=_text(body, "message"),
        facts=facts,
    )
    return web.json_response(reply)


@_guarded
async def checkin(request: web.Request) -> web.StreamResponse:
    """The dom0 agent's check-in (docs/protocol.md): its agent credential only."""
    ctx, mac = context(request), _mac(request)
    host = await _host_or_404(ctx, mac)
    if not await _is_hosts(request, host, token=False):
        return error(
            401,
            "wrong or revoked agent credential; this call needs "
            "Authorization: Bearer <the host's agent credential>",
            **_CHALLENGE,
        )
    body = await _body(request, {"running_version", "state", "multipath"})
    version = running_version(body.get("running_version"))
    reported = reported_state(body.get("state"))
    paths = multipath_report(body.get("multipath"))
    host = await blocking(ctx.registry.check_in, mac, version, reported, paths)
    profile = await blocking(ctx.registry.get_profile, host.profile)
    try:
        reply = checkin_reply(host, profile, ctx.settings)
    except InputError as exc:  # the server's configuration, not the agent's request
        message = " ".join(exc.problems)
        log.warning("check-in of %s cannot be answered: %s", mac, message)
        return error(500, message)
    return web.json_response(reply)


def _store_bundle(directory: Path, data: bytes) -> Path:
    """Write the bundle whole under a temporary name, then rename: never a half file."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = directory / f"{stamp}.tar.bz2"
    part = directory / f".{stamp}.part"
    part.write_bytes(data)
    os.replace(part, target)
    return target


async def put_logs(request: web.Request) -> web.StreamResponse:
    """The installer's support.tar.bz2 (at most 64 MiB), kept under DIR/logs/<mac>/."""
    ctx = context(request)
    try:
        mac = _mac(request)
        host = await _host_or_404(ctx, mac)
    except InputError as exc:
        return _refusal(exc)
    if not await _is_hosts(request, host):
        return error(401, f"wrong or expired token; {_HOST_REFUSAL}", **_CHALLENGE)
    if (request.content_length or 0) > MAX_LOG_BUNDLE:
        return error(413, f"a log bundle may have at most {MAX_LOG_BUNDLE} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_LOG_BUNDLE:
            return error(413, f"a log bundle may have at most {MAX_LOG_BUNDLE} bytes")
        chunks.append(chunk)
    if not size:
        return error(400, "the log bundle is empty")
    target = await blocking(_store_bundle, log_dir(ctx.registry_dir, mac), b"".join(chunks))
    stored = str(target.relative_to(ctx.registry_dir))
    return web.json_response({"stored": stored, "bytes": size}, status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/hosts", list_hosts, allow_head=False)
    app.router.add_post("/api/v1/hosts", create_host)
    app.router.add_get("/api/v1/hosts/{mac}", show_host, allow_head=False)
    app.router.add_patch("/api/v1/hosts/{mac}", edit_host)
    app.router.add_delete("/api/v1/hosts/{mac}", delete_host)
    app.router.add_get("/api/v1/hosts/{mac}/events", list_events, allow_head=False)
    app.router.add_post("/api/v1/hosts/{mac}/events", post_event)
    app.router.add_post("/api/v1/hosts/{mac}/rearm", rearm_host)
    app.router.add_post("/api/v1/hosts/{mac}/upgrade", upgrade_host)
    app.router.add_post("/api/v1/hosts/{mac}/restore", restore_host)
    app.router.add_post("/api/v1/hosts/{mac}/checkin", checkin)
    app.router.add_put("/api/v1/hosts/{mac}/logs", put_logs)
