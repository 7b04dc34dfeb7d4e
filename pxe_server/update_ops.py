"""What the server does with updates (README "Updates"): add, precheck, apply, clean.

    record = add_bundle(registry, shared, path, added_by)     # checked, signed, kept
    precheck(registry, update_id, macs) -> UpdatePrecheck
    job = start_update_apply(registry, request, started_by)    # precheck, then queued
    rolling_update(hosts, update, macs, pace) -> pool.PoolResult   # the job's sequence
    clean(registry, shared, update_id) -> record               # the file goes, the record stays

``add_bundle`` reads the bundle whole (every member's sha256), signs its ``update.json``
with the registry's update key and writes the signed copy to ``<shared
dir>/updates/<id>.update``, where every server of the registry serves it to agents. The
apply job is ``pool.roll``, the pool upgrade's sequence, with ``UpdateRollout``'s steps:
master first, one host at a time, each only after the previous one has it applied (and
rebooted and running again when the update reboots); the first failure stops it and
names the hosts not started.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from common.errors import InputError
from common.protocol.messages import (
    HostUpdateState,
    JobHostState,
    JobKind,
    PrecheckHost,
    State,
    UpdateApplyRequest,
    UpdatePrecheck,
    UpdateRecord,
    UpdateTargets,
)
from common.update_bundle import UpdateError, file_sha256, read_bundle, signed_copy
from pxe_server.jobs import Conflict, Job, UnknownPool, pool_macs
from pxe_server.model import Host
from pxe_server.pool import Pace, PoolPlan, PoolResult, Seen, roll
from pxe_server.registry import Registry
from pxe_server.updates import (
    RECENT_CHECKIN,
    UNPACK_FACTOR,
    UPDATES_DIR,
    WAITING,
    Facts,
    HostUpdate,
    StoredUpdate,
    bundle_name,
    different_content,
    update_record,
)


def bundle_path(shared: Path, update_id: str) -> Path:
    return shared / UPDATES_DIR / bundle_name(update_id)


def add_bundle(registry: Registry, shared: Path, path: Path, added_by: str) -> UpdateRecord:
    """Check the bundle at ``path``, sign it, keep it in the shared directory, record it.
    UpdateError (one sentence, nothing kept) for a bundle that cannot be used; Conflict for
    another update with the same id."""
    bundle = read_bundle(path)
    existing = registry.get_update(bundle.meta.id)
    metadata_sha256 = hashlib.sha256(bundle.metadata).hexdigest()
    if existing is not None and existing.metadata_sha256 != metadata_sha256:
        raise Conflict(different_content(bundle.meta.id))  # before its file is replaced
    signature = registry.update_key.sign(bundle.metadata).encode("ascii")
    directory = shared / UPDATES_DIR
    target = directory / bundle_name(bundle.meta.id)
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        part = directory / f".{target.name}.{secrets.token_hex(4)}"
        signed_copy(bundle, part, signature)
        os.chmod(part, 0o644)
        size, sha256 = part.stat().st_size, file_sha256(part)
        part.replace(target)
    except OSError as exc:
        raise UpdateError(f"cannot keep the bundle in {directory}: {exc.strerror}") from None
    stored, _new = registry.add_update(
        bundle.meta, metadata_sha256=metadata_sha256, size=size, sha256=sha256, added_by=added_by
    )
    return update_record(stored, registry.update_hosts(stored.id))


def records(registry: Registry) -> list[UpdateRecord]:
    """Every update with its hosts, by id."""
    by_update: dict[str, list[HostUpdate]] = {}
    for row in registry.update_hosts():
        by_update.setdefault(row.update_id, []).append(row)
    return [update_record(u, by_update.get(u.id, [])) for u in registry.updates()]


def record(registry: Registry, update_id: str) -> UpdateRecord:
    stored = registry.known_update(update_id)
    return update_record(stored, registry.update_hosts(update_id))


def clean(registry: Registry, shared: Path, update_id: str) -> UpdateRecord:
    """Remove the update's file from the shared directory; the record stays. Refused while
    a host has it pending (its agent would find the file gone)."""
    registry.known_update(update_id)
    pending = [h.mac for h in registry.update_hosts(update_id) if h.state in WAITING[:1]]
    if pending:
        raise InputError(
            f"update {update_id} is pending on {', '.join(pending)}; clean it once they have it"
        )
    try:
        bundle_path(shared, update_id).unlink(missing_ok=True)
    except OSError as exc:
        raise InputError(f"cannot remove the bundle of {update_id}: {exc.strerror}") from None
    registry.clean_update(update_id)
    return record(registry, update_id)


# -- precheck -------------------------------------------------------------------------------


def target_macs(registry: Registry, targets: UpdateTargets) -> tuple[str | None, list[str]]:
    """The pool (if named) and the hosts, the master first; InputError naming every
    problem."""
    if targets.pool is not None:
        if targets.hosts:
            raise InputError("give a pool or hosts, not both")
        pool = registry.get_pool(targets.pool)
        if pool is None:
            raise UnknownPool(f"no pool {targets.pool!r}; see `netinstall pool list`")
        return targets.pool, list(pool.hosts)
    if not targets.hosts:
        raise InputError("an update is applied to a named pool (--pool) or hosts (--host)")
    problems: list[str] = []
    macs = list(pool_macs(targets.hosts[0], targets.hosts[1:], problems))
    if problems:
        raise InputError(problems)
    return None, macs


def _problems(
    update: StoredUpdate,
    host: Host | None,
    facts: Facts | None,
    rows: Sequence[HostUpdate],
    now: float,
) -> list[str]:
    if host is None:
        return ["no such host in the registry"]
    problems: list[str] = []
    version = host.running_version
    if version is None or version not in update.applies_to:
        problems.append(
            f"it runs {version or 'an unknown version'}; the update applies to "
            f"{', '.join(update.applies_to)}"
        )
    if host.agent_credential_hash is None:
        problems.append("it has no agent (it never reported running)")
    elif host.last_checkin is None or now - host.last_checkin > RECENT_CHECKIN:
        problems.append(f"its agent has not checked in for {RECENT_CHECKIN / 3600:g} hours")
    elif facts is None:
        problems.append("its agent does not know updates (it is older: upgrade the host first)")
    if facts is not None and facts.free_mib is not None:
        need = UNPACK_FACTOR * update.size // (1 << 20) + 1
        if facts.free_mib < need:
            problems.append(f"{facts.free_mib} MiB free in dom0; the update needs {need}")
    if host.work is not None or host.state is not State.RUNNING:
        problems.append(f"it has other work ({host.work or host.state.value})")
    others = [r.update_id for r in rows if r.state in WAITING and r.update_id != update.id]
    if others:
        problems.append(f"update {others[0]} is under way on it")
    if update.cleaned is not None:
        problems.append("the update's file was cleaned: add the bundle again")
    return problems


def precheck_hosts(
    registry: Registry, update: StoredUpdate, macs: Sequence[str], now: float
) -> UpdatePrecheck:
    found: list[PrecheckHost] = []
    for mac in macs:
        host = registry.get_host(mac)
        facts = registry.update_facts(mac)
        rows = registry.host_updates_of(mac)
        mine = next((r for r in rows if r.update_id == update.id), None)
        if mine is not None and mine.state is HostUpdateState.APPLIED:
            problems: list[str] = []  # applied already: the apply skips it
        else:
            problems = _problems(update, host, facts, rows, now)
        found.append(
            PrecheckHost(
                mac=mac,
                ok=not problems,
                running_version=host.running_version if host else None,
                free_mib=facts.free_mib if facts else None,
                last_checkin=host.last_checkin if host else None,
                problems=tuple(problems),
            )
        )
    return UpdatePrecheck(update.id, all(h.ok for h in found), tuple(found))


def precheck(
    registry: Registry, update_id: str, targets: UpdateTargets, now: float
) -> UpdatePrecheck:
    update = registry.known_update(update_id)
    _pool, macs = target_macs(registry, targets)
    return precheck_hosts(registry, update, macs, now)


def start_update_apply(
    registry: Registry, request: UpdateApplyRequest, started_by: str, now: float
) -> Job:
    """The update applied as a job, after the precheck passed on every host (InputError
    naming each host's problems otherwise; Conflict while another job works on the pool
    or one of its hosts)."""
    update = registry.known_update(request.update)
    pool, macs = target_macs(registry, UpdateTargets(request.pool, request.hosts))
    checked = precheck_hosts(registry, update, macs, now)
    if not checked.ok:
        raise InputError(
            [f"{h.mac}: {problem}" for h in checked.hosts for problem in h.problems]
            + ["the precheck failed: nothing was applied (see `netinstall update precheck`)"]
        )
    parameters = {
        "update": update.id,
        "reboot": request.reboot.value,
        "timeout": request.timeout,
        "poll": request.poll,
    }
    return registry.add_job(
        JobKind.UPDATE_APPLY, hosts=macs, parameters=parameters, started_by=started_by, pool=pool
    )


# -- the job's sequence ----------------------------------------------------------------------


class UpdateHosts(Protocol):
    """What the rolling update needs of the registry (a job's view of it)."""

    def get_host(self, mac: str) -> Host | None: ...

    def host_updates_of(self, mac: str) -> list[HostUpdate]: ...

    def give(self, mac: str) -> HostUpdate: ...


@dataclass(frozen=True)
class UpdatePlan:
    update: StoredUpdate
    hosts: tuple[str, ...]  # the master first


def _row(hosts: UpdateHosts, mac: str, update_id: str) -> HostUpdate | None:
    return next((r for r in hosts.host_updates_of(mac) if r.update_id == update_id), None)


def wait_for_update(hosts: UpdateHosts, mac: str, update_id: str, pace: Pace) -> str | None:
    """Poll until ``mac`` has the update applied: None, or why it will not (one sentence)."""
    began = pace.clock()
    seen: HostUpdateState | None = None
    while True:
        row = _row(hosts, mac, update_id)
        elapsed = pace.clock() - began
        if row is None:
            return "its update record was removed (the host was removed or reinstalled)"
        if row.state is not seen:
            seen = row.state
            pace.say(f"{mac}: {row.state.value} after {elapsed:.0f} s")
        if row.state is HostUpdateState.APPLIED:
            return None
        if row.state is HostUpdateState.FAILED:
            return f"it failed: {row.reason or 'the agent gave no reason'}"
        if elapsed >= pace.timeout:
            return f"it timed out after {elapsed:.0f} s ({row.state.value})"
        pace.sleep(pace.poll)


@dataclass(frozen=True)
class UpdateRollout:
    """An update given to a pool's hosts one by one (a ``pool.Rollout``)."""

    hosts: UpdateHosts
    update_id: str
    working: JobHostState = JobHostState.APPLYING
    refused: str = "the update could not be given"

    def look(self, mac: str) -> Seen:
        row = _row(self.hosts, mac, self.update_id)
        if row is not None and row.state is HostUpdateState.APPLIED:
            return Seen(skipped=(f"has {self.update_id} already; skipped",
                                 f"had {self.update_id} already"))  # fmt: skip
        if row is not None and row.state in WAITING:
            return Seen(
                following=f"{self.update_id} is under way ({row.state.value}); following it"
            )
        return Seen()

    def give(self, mac: str) -> str:
        self.hosts.give(mac)
        return f"{self.update_id} given"

    def wait(self, mac: str, pace: Pace) -> str | None:
        return wait_for_update(self.hosts, mac, self.update_id, pace)

    def finished(self, mac: str) -> str:
        return f"has {self.update_id}"


def rolling_update(hosts: UpdateHosts, plan: UpdatePlan, pace: Pace) -> PoolResult:
    """Give ``plan.update`` to each host in turn, master first; stop at the first failure
    (``pool.roll``). Hosts that have it applied are skipped; one where it is under way is
    followed."""
    update_id = plan.update.id
    return roll(UpdateRollout(hosts, update_id), PoolPlan(update_id, plan.hosts), pace)
