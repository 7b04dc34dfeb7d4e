"""HTTP, part 2: the JSON API under ``/api/v1/`` (docs/protocol.md, SPEC §9).

``API`` below is the route table: each route's method, path, who may call it, and
the messages (``common.protocol.messages``) it takes and gives. ``http_edge`` checks
the caller (one middleware) and decodes the body before a handler here runs, so
handlers receive typed values and return typed replies. ``openapi`` describes the
same table at ``GET /api/v1/openapi.json``.

Operator calls need ``Authorization: Bearer <the server's API token>`` (missing 401,
wrong 403); installer and first-boot calls the host's install token or agent
credential, the agent's check-in its agent credential (missing or wrong 401). No
reply carries a token or credential, except the agent credential in the reply to the
``running`` event and the install token in a check-in reply's kernel command line.
Errors are ``{"protocol": 2, "error": "<one sentence>"}``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import string
import time
import typing
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from common.errors import InputError
from common.protocol.codec import ABSENT, decode, encode
from common.protocol.messages import (
    MAX_KEY,
    MIN_KEY,
    Action,
    AnswerFileCheck,
    Checkin,
    CheckinReply,
    Deleted,
    Enrolled,
    Enrolment,
    Event,
    EventList,
    EventReply,
    HostCreate,
    HostEdit,
    HostList,
    HostRecord,
    JobCancel,
    JobList,
    JobRecord,
    LogList,
    LogStored,
    NoBody,
    PoolList,
    PoolMember,
    PoolRecord,
    PoolSpec,
    PoolUpgradeRequest,
    ProfileList,
    ProfileRecord,
    ProfileSpec,
    Removed,
    RepositoryList,
    RestoreRequest,
    ServerList,
    UpdateWork,
    UpgradeRequest,
    Work,
)
from pxe_server import answer_check, openapi, operator_view
from pxe_server.bmc_control import powered_for_work, set_host_bmc, stored_bmc
from pxe_server.checkin import checkin_reply
from pxe_server.http_edge import (
    JSON_TYPE,
    ROUTES,
    Call,
    Caller,
    Route,
    bearer,
    body_chunks,
    check_not_encoded,
)
from pxe_server.http_files import Context, blocking, error
from pxe_server.job_runner import start_pool_upgrade
from pxe_server.jobs import UnknownJob, job_record, pool_record
from pxe_server.limits import LOG_WRITE_CHUNK, MAX_LOG_BUNDLE
from pxe_server.log_bundles import Bundle, bundle_file, bundles, log_dir, no_bundle
from pxe_server.model import (
    AGENT_WORK,
    Host,
    SanTarget,
    State,
    event_record,
    host_record,
    normalise_mac,
    reported_from,
)
from pxe_server.operator_view import UnknownProfile
from pxe_server.registry import Registry, UnknownHost, WouldWait
from pxe_server.secrets import Purpose
from pxe_server.update_ops import bundle_path
from pxe_server.updates import HostUpdate, Report

log = logging.getLogger("netinstall.http")

_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "-_")


T = TypeVar("T")


async def writing(ctx: Context, func: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run ``func`` (a registry write) on the registry's one writer thread, off the loop:
    the operator's writes (one may renew every host's revision)."""
    call = functools.partial(func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(ctx.registry.writer(), call)


async def host_writing(ctx: Context, func: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run ``func``, one of a host's own short writes (its boot config's signal, its
    enrolment, its events, its check-ins), now on the loop's thread if it can start
    without waiting (``Registry.write_now``), else on the registry's writer thread."""
    call = functools.partial(func, *args, **kwargs)
    try:
        return ctx.registry.write_now(call)
    except WouldWait:  # another writer, of ours or another process's: not on the loop
        pass
    return await asyncio.get_running_loop().run_in_executor(ctx.registry.writer(), call)


async def _known(ctx: Context, mac: str) -> Host:
    host = ctx.registry.get_host(mac)  # a read on this thread's connection: never waits
    if host is None:
        raise UnknownHost(f"no host {mac} in the registry")
    return host


# -- operators ---------------------------------------------------------------------------


async def list_hosts(call: Call[NoBody]) -> web.Response:
    """Every host with its latest event, encoded off the loop (10,000 hosts: megabytes)."""
    hosts = await blocking(_encoded, operator_view.host_records, call.ctx.registry)
    return web.Response(body=hosts, content_type=JSON_TYPE, charset="utf-8")


def _encoded(func: Callable[[Registry], list[HostRecord]], registry: Registry) -> bytes:
    return json.dumps(encode(HostList(tuple(func(registry))))).encode()


async def create_host(call: Call[HostCreate]) -> HostRecord:
    """A new host; with a BMC, that too (checked and sealed before the host is added)."""
    body, san, mac = call.body, call.body.san, normalise_mac(call.body.mac)
    root = None
    if san is not None:
        root = SanTarget(san.root_path, san.address, san.gateway, san.initiator, san.paths)
    registry = call.ctx.registry
    bmc = None if body.bmc is None else await blocking(stored_bmc, registry, mac, body.bmc)
    await writing(
        call.ctx,
        registry.add_host,
        mac,
        profile=body.profile,
        name=body.name,
        variables=dict(body.variables),
        san=root,
    )
    if bmc is not None:
        await writing(call.ctx, registry.set_bmc, bmc)
    return await blocking(operator_view.host_view, registry, mac)


async def show_host(call: Call[NoBody]) -> HostRecord:
    return await blocking(operator_view.host_view, call.ctx.registry, call.mac)


async def edit_host(call: Call[HostEdit]) -> HostRecord:
    """Variables set or unset by name are merged under the host row's lock: two operators
    changing different ones at once both keep their change."""
    ctx, mac = call.ctx, call.mac
    await _known(ctx, mac)
    if call.body.bmc is not ABSENT:
        await blocking(set_host_bmc, ctx.registry, mac, call.body.bmc)
    if call.body.segment_server is not ABSENT:
        await writing(ctx, operator_view.pin_segment, ctx.registry, mac, call.body.segment_server)
    await writing(ctx, operator_view.edit_host, ctx.registry, mac, call.body)
    return await blocking(operator_view.host_view, ctx.registry, mac)


async def delete_host(call: Call[NoBody]) -> Deleted:
    ctx, mac = call.ctx, call.mac
    await _known(ctx, mac)
    await writing(ctx, ctx.registry.delete_host, mac)
    return Deleted(mac)


async def rearm_host(call: Call[NoBody]) -> HostRecord:
    ctx, mac = call.ctx, call.mac
    await _known(ctx, mac)
    return host_record(await writing(ctx, ctx.registry.rearm, mac))


async def upgrade_host(call: Call[UpgradeRequest]) -> HostRecord:
    ctx, mac = call.ctx, call.mac
    await _known(ctx, mac)
    host = await writing(
        ctx,
        ctx.registry.assign_work,
        mac,
        Work.UPGRADE,
        version=call.body.version,
        reboot=call.body.reboot,
    )
    return await _powered(ctx, host)


async def restore_host(call: Call[RestoreRequest]) -> HostRecord:
    ctx, mac = call.ctx, call.mac
    await _known(ctx, mac)
    host = await writing(ctx, ctx.registry.assign_work, mac, Work.RESTORE, reboot=call.body.reboot)
    return await _powered(ctx, host)


async def _powered(ctx: Context, host: Host) -> HostRecord:
    """Agent work assigned: a host with a BMC that is off is powered on so that its agent
    checks in (as pool jobs, the console and the CLI do); the reply says what happened."""
    said = await blocking(powered_for_work, ctx.registry, host.mac)
    return replace(host_record(host), power_on=said)


async def list_servers(call: Call[NoBody]) -> ServerList:
    """The servers of the registry (``segments``), whether each runs, their hosts."""
    found = await blocking(operator_view.server_records, call.ctx.registry, time.time())
    return ServerList(tuple(found))


async def list_events(call: Call[NoBody]) -> EventList:
    ctx, mac = call.ctx, call.mac
    await _known(ctx, mac)
    events = await blocking(ctx.registry.events, mac)
    return EventList(tuple(event_record(e) for e in events))


# -- operators: profiles, repositories, answer files ---------------------------------------


async def list_profiles(call: Call[NoBody]) -> ProfileList:
    return ProfileList(tuple(await blocking(operator_view.profile_records, call.ctx.registry)))


def _profile_name(call: Call[Any]) -> str:
    return call.request.match_info["name"]


async def show_profile(call: Call[NoBody]) -> ProfileRecord:
    name = _profile_name(call)
    found = await blocking(operator_view.find_profile, call.ctx.registry, name)
    if found is None:
        raise UnknownProfile(f"no profile {name!r}; see `netinstall profile list`")
    return found


async def create_profile(call: Call[ProfileSpec]) -> ProfileRecord:
    ctx, profile = call.ctx, operator_view.profile_of(call.body)
    await writing(ctx, ctx.registry.add_profile, profile)
    found = await blocking(operator_view.find_profile, ctx.registry, profile.name)
    return typing.cast(ProfileRecord, found)


async def replace_profile(call: Call[ProfileSpec]) -> ProfileRecord:
    ctx, name, profile = call.ctx, _profile_name(call), operator_view.profile_of(call.body)
    if profile.name != name:
        raise InputError(f"profile: field 'name' is {profile.name!r}, but the path names {name!r}")
    if await blocking(ctx.registry.get_profile, name) is None:
        raise UnknownProfile(f"no profile {name!r}; see `netinstall profile list`")
    await writing(ctx, ctx.registry.update_profile, profile)
    found = await blocking(operator_view.find_profile, ctx.registry, name)
    return typing.cast(ProfileRecord, found)


async def remove_profile(call: Call[NoBody]) -> Removed:
    """Refused (409, naming how many) while hosts use the profile."""
    ctx, name = call.ctx, _profile_name(call)
    if await blocking(ctx.registry.get_profile, name) is None:
        raise UnknownProfile(f"no profile {name!r}; see `netinstall profile list`")
    await writing(ctx, ctx.registry.delete_profile, name)
    return Removed(name)


# -- operators: pools and jobs ---------------------------------------------------------------


def _pool_name(call: Call[Any]) -> str:
    return call.request.match_info["name"]


def requester(call: Call[Any], by: str | None) -> str:
    """Who an API call is from, for a job's record: the name the client gave, and its
    address (one API token: the server cannot tell operators apart)."""
    return f"{by or 'an operator'} (API, from {call.request.remote or 'an unknown address'})"


async def list_pools(call: Call[NoBody]) -> PoolList:
    return PoolList(tuple(await blocking(operator_view.pool_records, call.ctx.registry)))


async def show_pool(call: Call[NoBody]) -> PoolRecord:
    return await blocking(operator_view.pool_view, call.ctx.registry, _pool_name(call))


async def create_pool(call: Call[PoolSpec]) -> PoolRecord:
    ctx, body = call.ctx, call.body
    pool = await writing(ctx, ctx.registry.create_pool, body.name, body.master, body.members)
    return pool_record(pool, None)


async def delete_pool(call: Call[NoBody]) -> Removed:
    ctx, name = call.ctx, _pool_name(call)
    await writing(ctx, ctx.registry.delete_pool, name)
    return Removed(name)


async def add_pool_member(call: Call[PoolMember]) -> PoolRecord:
    ctx, name = call.ctx, _pool_name(call)
    await writing(ctx, ctx.registry.add_to_pool, name, call.body.mac)
    return await blocking(operator_view.pool_view, ctx.registry, name)


async def remove_pool_member(call: Call[NoBody]) -> PoolRecord:
    ctx, name = call.ctx, _pool_name(call)
    await writing(ctx, ctx.registry.remove_from_pool, name, call.mac)
    return await blocking(operator_view.pool_view, ctx.registry, name)


async def start_pool_upgrade_job(call: Call[PoolUpgradeRequest]) -> JobRecord:
    """Checked at once (every problem named), then queued: a server's job runner runs it."""
    ctx = call.ctx
    by = requester(call, call.body.by)
    job = await writing(ctx, start_pool_upgrade, ctx.registry, call.body, by)
    return job_record(job)


async def list_jobs(call: Call[NoBody]) -> JobList:
    found = await blocking(call.ctx.registry.jobs)
    return JobList(tuple(job_record(job) for job in found))


def _job_id(call: Call[Any]) -> int:
    text = call.request.match_info["id"]
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise InputError(f"job {text[:32]!r}: a job is named by its number")
    return int(text)


async def show_job(call: Call[NoBody]) -> JobRecord:
    """``?log_after=N``: only the log's lines after line N (what a follower printed)."""
    job_id = _job_id(call)
    after = call.request.query.get("log_after", "0")
    if not after.isascii() or not after.isdigit() or len(after) > 18:
        raise InputError(f"log_after {after[:32]!r}: expected a line number (0 or more)")
    job = await blocking(call.ctx.registry.job, job_id)
    if job is None:
        raise UnknownJob(f"no job {job_id}; see `netinstall job list`")
    return job_record(job, int(after))


async def cancel_job(call: Call[JobCancel]) -> JobRecord:
    """A queued job ends at once; a running one stops before its next host."""
    ctx = call.ctx
    job = await writing(ctx, ctx.registry.cancel_job, _job_id(call), requester(call, call.body.by))
    return job_record(job)


async def list_repositories(call: Call[NoBody]) -> RepositoryList:
    found = await blocking(operator_view.repository_records, call.ctx.registry)
    return RepositoryList(tuple(found))


async def check_answer_file(call: Call[NoBody]) -> AnswerFileCheck:
    """The host's answer file rendered and validated now; the host is not signalled."""
    ctx = call.ctx
    return await blocking(
        answer_check.check_answer_file,
        ctx.registry,
        call.mac,
        ctx.settings,
        ctx.repository_url(),
    )


# -- the installer, first boot and the agent -------------------------------------------------


async def enrol(call: Call[Enrolment]) -> Enrolled:
    """The installer's first call: its own key, enrolled with the install token."""
    key = call.body.key
    if not MIN_KEY <= len(key) <= MAX_KEY or not key.isascii() or not _KEY_CHARS.issuperset(key):
        raise InputError(
            f"enrolment: field key: {MIN_KEY} to {MAX_KEY} URL-safe base64 characters expected"
        )
    address = call.request.remote or "an unknown address"
    _, outcome = await host_writing(
        call.ctx, call.ctx.registry.enrol, call.mac, bearer(call.request) or "", key, address
    )
    call.ctx.registry.served(call.mac)  # this server is on its segment (``segments``)
    return Enrolled(outcome, call.ctx.registry.update_key.public_line())


# The reply to a progress event, encoded once: progress is most of what hosts send.
_PROGRESS_REPLY = json.dumps(encode(EventReply())).encode()


async def post_event(call: Call[Event]) -> EventReply | web.Response:
    """An installer, first-boot or agent report (docs/protocol.md).

    A progress event (``installing`` again) of a host installing is queued and answered
    at once (``Registry.queue_progress``: committed within ``PROGRESS_DELAY`` s, in order);
    every other report is committed before its reply."""
    event, registry, seen = call.body, call.ctx.registry, call.host
    if (
        seen is not None
        and event.state is State.INSTALLING
        and reported_from(seen) is State.INSTALLING
        and event.facts is None
    ):
        progress = event.progress
        full = registry.queue_progress(
            seen, step=event.step, progress=progress, message=event.message
        )
        if full:  # the reporter that fills the queue waits for its commit
            await host_writing(call.ctx, registry.flush_progress)
        return web.Response(body=_PROGRESS_REPLY, content_type=JSON_TYPE, charset="utf-8")
    facts = None if event.facts is None else encode(event.facts, envelope=False)
    _, reply = await host_writing(
        call.ctx,
        registry.record_event,
        call.mac,
        event.state,
        step=event.step,
        progress=event.progress,
        message=event.message,
        facts=facts,
        by_install_key=call.proved is Purpose.INSTALL_KEY,
    )
    return decode(EventReply, reply, strict=False)


async def checkin(call: Call[Checkin]) -> CheckinReply | web.Response:
    """The dom0 agent's check-in (docs/protocol.md): its agent credential only."""
    ctx, mac, body = call.ctx, call.mac, call.body
    maps = None if body.multipath is None else [encode(m, envelope=False) for m in body.multipath]
    version = body.running_version.strip()
    host = await host_writing(
        ctx, ctx.registry.check_in, mac, version, body.state, maps, seen=call.host
    )
    ctx.registry.served(mac)  # this server is on its segment (``segments``)
    report = Report(body.updates, body.boot_id, body.free_mib, body.update_result)
    pending, changed = ctx.registry.update_offer(mac, report)  # reads, on this thread
    if changed:
        pending = await host_writing(ctx, ctx.registry.update_checkin, mac, report)
    offered = host.work in AGENT_WORK
    profile = ctx.registry.get_profile(host.profile) if offered else None
    try:
        reply = checkin_reply(host, profile, ctx.settings)
    except InputError as exc:  # the server's configuration, not the agent's request
        message = " ".join(exc.problems)
        log.warning("check-in of %s cannot be answered: %s", mac, message)
        return error(409, f"the check-in of {mac} cannot be answered: {message}")
    if body.updates is None:  # an agent from before updates
        return reply
    key = ctx.registry.update_key.public_line()
    work = None
    if pending is not None and reply.action is Action.NONE and host.state is State.RUNNING:
        work = await blocking(_update_work, ctx, host.mac, pending)
    return replace(reply, update=work, update_key=key)


def _update_work(ctx: Context, mac: str, pending: HostUpdate) -> UpdateWork | None:
    """What the check-in reply says of an update pending on ``mac`` (None: its file is gone)."""
    stored = ctx.registry.get_update(pending.update_id)
    if stored is None or stored.cleaned is not None:
        return None
    url = f"{ctx.settings.http_base}{HOSTS}/{quote(mac, safe='')}/updates/{stored.id}"
    return UpdateWork(stored.id, url, stored.size, stored.sha256, pending.reboot_policy)


async def get_update_bundle(call: Call[NoBody]) -> web.StreamResponse:
    """The signed bundle of an update given to the host: its agent fetches it."""
    ctx, mac, update_id = call.ctx, call.mac, call.request.match_info["id"]
    given = await blocking(ctx.registry.host_updates_of, mac)
    if not any(row.update_id == update_id for row in given):
        return error(404, f"host {mac} was given no update {update_id[:64]!r}")
    path = bundle_path(ctx.shared, update_id)
    if not await blocking(path.is_file):
        return error(404, f"the bundle of update {update_id} is not kept (it was cleaned)")
    headers = {"Content-Type": "application/x-tar"}
    return web.FileResponse(path, chunk_size=1 << 18, headers=headers)


async def _stream(request: web.Request, bundle: Bundle) -> int:
    """The body into ``bundle``, ``LOG_WRITE_CHUNK`` bytes at a time; its size."""
    size, pending = 0, bytearray()
    async for chunk in body_chunks(request, MAX_LOG_BUNDLE, "a log bundle"):
        pending += chunk
        if len(pending) >= LOG_WRITE_CHUNK:
            await blocking(bundle.write, bytes(pending))
            size += len(pending)
            pending.clear()
    await blocking(bundle.write, bytes(pending))
    return size + len(pending)


async def put_logs(call: Call[NoBody]) -> LogStored | web.Response:
    """The installer's support.tar.bz2 (at most 64 MiB), streamed to DIR/logs/<mac>/."""
    request, ctx, mac = call.request, call.ctx, call.mac
    check_not_encoded(request)
    if (request.content_length or 0) > MAX_LOG_BUNDLE:
        return error(413, f"a log bundle may have at most {MAX_LOG_BUNDLE} bytes")
    bundle = await blocking(Bundle, log_dir(ctx.shared, mac))
    try:
        size = await _stream(request, bundle)
        target = await blocking(bundle.commit) if size else None
    except BaseException:  # too large, too slow, the client gone, cancelled: no half file
        await asyncio.shield(blocking(bundle.discard))
        raise
    if target is None:
        await blocking(bundle.discard)
        return error(400, "the log bundle is empty")
    return LogStored(str(target.relative_to(ctx.shared)), size)


async def list_logs(call: Call[NoBody]) -> LogList:
    """A host's kept log bundles, from the shared directory: any server lists what the
    installer uploaded to any other."""
    ctx, mac = call.ctx, call.mac
    await _known(ctx, mac)
    return LogList(tuple(await blocking(bundles, log_dir(ctx.shared, mac))))


async def get_log(call: Call[NoBody]) -> web.StreamResponse:
    """One of a host's log bundles (``GET .../logs`` names them), as uploaded."""
    ctx, mac, name = call.ctx, call.mac, call.request.match_info["name"]
    await _known(ctx, mac)
    path = await blocking(bundle_file, ctx.shared, mac, name)
    if path is None:
        return error(404, no_bundle(mac, name))
    headers = {"Content-Type": "application/x-bzip2"}
    return web.FileResponse(path, chunk_size=1 << 18, headers=headers)


async def openapi_document(call: Call[NoBody]) -> web.Response:
    """This API described as OpenAPI 3 (paths, methods, messages, who may call what)."""
    routes = tuple(call.request.app[ROUTES].values())  # API and the routes declared elsewhere
    return web.json_response(openapi.document(routes, call.ctx.settings.http_base))


# -- the route table ---------------------------------------------------------------------

HOSTS = "/api/v1/hosts"
HOST = "/api/v1/hosts/{mac}"
PROFILES = "/api/v1/profiles"
PROFILE = "/api/v1/profiles/{name}"
POOLS = "/api/v1/pools"
POOL = "/api/v1/pools/{name}"
JOBS = "/api/v1/jobs"
JOB = "/api/v1/jobs/{id}"
OPERATOR, HOST_SECRET, AGENT = Caller.OPERATOR, Caller.HOST, Caller.AGENT

API: tuple[Route, ...] = (
    Route("GET", HOSTS, list_hosts, OPERATOR, "every host", reply=HostList),
    Route("POST", HOSTS, create_host, OPERATOR, "register a host", HostCreate, HostRecord,
          status=201),
    Route("GET", HOST, show_host, OPERATOR, "one host", reply=HostRecord, refusals=(404,)),
    Route("PATCH", HOST, edit_host, OPERATOR, "change a host's name, profile, variables or BMC",
          HostEdit, HostRecord, refusals=(404,)),
    Route("DELETE", HOST, delete_host, OPERATOR, "remove a host and its events",
          reply=Deleted, refusals=(404,)),
    Route("GET", f"{HOST}/events", list_events, OPERATOR, "a host's events, oldest first",
          reply=EventList, refusals=(404,)),
    Route("POST", f"{HOST}/enrol", enrol, Caller.TICKET,
          "the installer enrols its own key with the install token", Enrolment, Enrolled,
          refusals=(409,)),
    Route("POST", f"{HOST}/events", post_event, HOST_SECRET,
          "report an install step, its end or the first boot", Event, EventReply,
          refusals=(409,), alike=True),
    Route("POST", f"{HOST}/rearm", rearm_host, OPERATOR, "new network-install work",
          reply=HostRecord, refusals=(404,)),
    Route("POST", f"{HOST}/upgrade", upgrade_host, OPERATOR,
          "the agent upgrades the host", UpgradeRequest, HostRecord, refusals=(404,)),
    Route("POST", f"{HOST}/restore", restore_host, OPERATOR,
          "the agent restores the host's backup partition", RestoreRequest, HostRecord,
          refusals=(404,)),
    Route("POST", f"{HOST}/checkin", checkin, AGENT, "the agent's check-in", Checkin,
          CheckinReply, alike=True),
    Route("GET", f"{HOST}/updates/{{id}}", get_update_bundle, AGENT,
          "the agent fetches the signed bundle of an update it was given",
          raw_reply="application/x-tar", refusals=(404,)),
    Route("PUT", f"{HOST}/logs", put_logs, HOST_SECRET, "upload the installer's log bundle",
          reply=LogStored, status=201, raw_body="application/x-bzip2", refusals=(413,)),
    Route("GET", f"{HOST}/logs", list_logs, OPERATOR,
          "a host's kept log bundles, uploaded to any server", reply=LogList, refusals=(404,)),
    Route("GET", f"{HOST}/logs/{{name}}", get_log, OPERATOR, "one of a host's log bundles",
          raw_reply="application/x-bzip2", refusals=(404,)),
    Route("GET", f"{HOST}/answerfile-check", check_answer_file, OPERATOR,
          "render the host's answer file now and validate it (nothing else is done)",
          reply=AnswerFileCheck, refusals=(404,)),
    Route("GET", PROFILES, list_profiles, OPERATOR, "every profile", reply=ProfileList),
    Route("POST", PROFILES, create_profile, OPERATOR, "add a profile", ProfileSpec,
          ProfileRecord, status=201),
    Route("GET", PROFILE, show_profile, OPERATOR, "one profile", reply=ProfileRecord,
          refusals=(404,)),
    Route("PUT", PROFILE, replace_profile, OPERATOR, "replace a profile", ProfileSpec,
          ProfileRecord, refusals=(404,)),
    Route("DELETE", PROFILE, remove_profile, OPERATOR,
          "remove a profile no host uses", reply=Removed, refusals=(404, 409)),
    Route("GET", POOLS, list_pools, OPERATOR, "every named pool", reply=PoolList),
    Route("POST", POOLS, create_pool, OPERATOR, "create a pool: a master and members",
          PoolSpec, PoolRecord, status=201, refusals=(409,)),
    Route("GET", POOL, show_pool, OPERATOR, "one pool", reply=PoolRecord, refusals=(404,)),
    Route("DELETE", POOL, delete_pool, OPERATOR, "forget a pool (its hosts stay)",
          reply=Removed, refusals=(404, 409)),
    Route("POST", f"{POOL}/members", add_pool_member, OPERATOR, "a host joins the pool, last",
          PoolMember, PoolRecord, refusals=(404, 409)),
    Route("DELETE", f"{POOL}/members/{{mac}}", remove_pool_member, OPERATOR,
          "a member leaves the pool", reply=PoolRecord, refusals=(404, 409)),
    Route("POST", f"{JOBS}/pool-upgrade", start_pool_upgrade_job, OPERATOR,
          "queue a rolling upgrade (a named pool, or a master and members) as a job",
          PoolUpgradeRequest, JobRecord, status=201, refusals=(404, 409)),
    Route("GET", JOBS, list_jobs, OPERATOR, "every job kept, newest first", reply=JobList),
    Route("GET", JOB, show_job, OPERATOR, "one job (?log_after=N: its log after line N)",
          reply=JobRecord, refusals=(404,)),
    Route("POST", f"{JOB}/cancel", cancel_job, OPERATOR,
          "cancel a job: it stops before its next host", JobCancel, JobRecord,
          refusals=(404, 409)),
    Route("GET", "/api/v1/servers", list_servers, OPERATOR,
          "the servers of the registry: each one's name, address, last heartbeat and hosts",
          reply=ServerList),
    Route("GET", "/api/v1/repositories", list_repositories, OPERATOR,
          "every install repository", reply=RepositoryList),
    Route("GET", "/api/v1/openapi.json", openapi_document, Caller.ANYONE,
          "this description (OpenAPI 3)"),
)  # fmt: skip
