"""Pools and server-side jobs in the registry (README "Pools and jobs"): a part of
``Registry``, which inherits it. Their types and rules are jobs.py's; job_runner.py
runs the jobs. Lock order, as the registry's: a job's row, then host rows (MAC order),
then the counters row."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, or_, select, update

from common.errors import InputError
from common.protocol.messages import JobHostState, JobKind, JobState
from pxe_server.jobs import (
    ACTIVE,
    JOBS_KEPT,
    Conflict,
    Job,
    JobHost,
    LeaseLost,
    Pool,
    UnknownJob,
    UnknownPool,
    appended,
    hosts_json,
    job_from,
    log_json,
    pool_macs,
    pool_name,
    pool_size,
)
from pxe_server.model import AGENT_WORK, Host, RebootPolicy, Work, normalise_mac
from pxe_server.registry_base import LOCK_HOSTS, RegistryBase
from pxe_server.registry_input import choice
from pxe_server.store.tables import jobs, pool_hosts, pools


class PoolsAndJobs(RegistryBase):
    """The registry's pools and jobs (``Registry`` inherits them)."""

    if TYPE_CHECKING:

        def _assign(
            self, conn: Connection, mac: str, kind: Work, version: str | None, policy: RebootPolicy
        ) -> Host: ...

    # -- pools -------------------------------------------------------------------

    def pools(self) -> list[Pool]:
        """Every pool by name, its hosts in their order (the master first)."""
        found: dict[str, list[str]] = {}
        for name, mac in self._query(_POOL_HOSTS):
            found.setdefault(name, []).append(mac)
        return [Pool(name, tuple(macs)) for name, macs in found.items()]

    def get_pool(self, name: str) -> Pool | None:
        macs = [row[0] for row in self._query(_POOL_HOSTS_OF, {"pool": name})]
        return Pool(name, tuple(macs)) if macs else None

    def pool_of(self, mac: str) -> str | None:
        """The pool ``mac`` is in, if any."""
        found = self._query(_POOL_OF, {"mac": normalise_mac(mac)})
        return str(found[0][0]) if found else None

    def _lock_pool_hosts(
        self, conn: Connection, macs: Sequence[str], new_pool: str | None = None
    ) -> None:
        """``macs`` exist (InputError naming every missing one) and are in no pool (Conflict
        naming it), and no pool is called ``new_pool``; their rows locked in MAC order,
        then the counters row."""
        locked = {row[0] for row in conn.execute(LOCK_HOSTS, {"macs": sorted(macs)}).all()}
        self._serialise(conn)
        if (
            new_pool is not None
            and conn.execute(select(pools.c.name).where(pools.c.name == new_pool)).first()
        ):
            raise Conflict(f"pool {new_pool} exists already; see `netinstall pool show {new_pool}`")
        missing = [f"no host {mac} in the registry" for mac in macs if mac not in locked]
        if missing:
            raise InputError(missing)
        taken = conn.execute(
            select(pool_hosts.c.mac, pool_hosts.c.pool).where(pool_hosts.c.mac.in_(macs))
        ).all()
        if taken:
            mac, pool = sorted(taken)[0]
            raise Conflict(
                f"host {mac} is in pool {pool} already (a host is in one pool at most); "
                f"`netinstall pool remove {pool} {mac}` first"
            )

    def create_pool(self, name: str, master: str, members: Sequence[str] = ()) -> Pool:
        """A new pool: ``master`` (upgraded first) and ``members`` in their order. Every
        host must exist and be in no other pool."""
        name = pool_name(name)
        problems: list[str] = []
        macs = list(pool_macs(master, members, problems))
        if problems:
            raise InputError(problems)
        pool_size(len(macs))
        with self._write() as conn:
            self._lock_pool_hosts(conn, macs, new_pool=name)
            conn.execute(insert(pools).values(name=name, created=time.time()))
            rows_ = [{"mac": m, "pool": name, "position": i} for i, m in enumerate(macs)]
            conn.execute(insert(pool_hosts), rows_)
        return Pool(name, tuple(macs))

    def _pool_hosts(self, conn: Connection, name: str) -> list[str]:
        """The pool's hosts (inside a write), its row locked; UnknownPool if none."""
        found = conn.execute(select(pools.c.name).where(pools.c.name == name).with_for_update())
        if found.first() is None:
            raise UnknownPool(f"no pool {name!r}; see `netinstall pool list`")
        return [row[0] for row in conn.execute(_POOL_HOSTS_OF, {"pool": name}).all()]

    def add_to_pool(self, name: str, mac: str) -> Pool:
        """``mac`` joins pool ``name`` as its last member."""
        mac = normalise_mac(mac)
        with self._write() as conn:
            self._lock_pool_hosts(conn, [mac])
            macs = self._pool_hosts(conn, name)
            pool_size(len(macs) + 1)
            last = conn.execute(
                select(func.max(pool_hosts.c.position)).where(pool_hosts.c.pool == name)
            ).scalar_one()
            conn.execute(insert(pool_hosts).values(mac=mac, pool=name, position=last + 1))
        return Pool(name, (*macs, mac))

    def remove_from_pool(self, name: str, mac: str) -> Pool:
        """``mac`` leaves pool ``name`` (a member; the master stays while the pool is)."""
        mac = normalise_mac(mac)
        with self._write() as conn:
            macs = self._pool_hosts(conn, name)
            if mac not in macs:
                raise InputError(f"host {mac} is not in pool {name}")
            if mac == macs[0]:
                raise Conflict(
                    f"host {mac} is the master of pool {name}; delete the pool "
                    f"(`netinstall pool delete {name}`) and create it with another master"
                )
            conn.execute(delete(pool_hosts).where(pool_hosts.c.mac == mac))
        return Pool(name, tuple(m for m in macs if m != mac))

    def delete_pool(self, name: str) -> None:
        """Forget pool ``name`` (its hosts stay); Conflict while a job works on it."""
        with self._write() as conn:
            self._pool_hosts(conn, name)
            for job in self._active_jobs(conn):
                if job.pool == name:
                    raise Conflict(
                        f"pool {name} has job {job.id} {job.state.value}; cancel it first "
                        f"(`netinstall job cancel {job.id}`)"
                    )
            conn.execute(delete(pool_hosts).where(pool_hosts.c.pool == name))
            conn.execute(delete(pools).where(pools.c.name == name))

    # -- jobs --------------------------------------------------------------------

    def _active_jobs(self, conn: Connection) -> list[Job]:
        found = conn.execute(_JOBS.where(jobs.c.state.in_([s.value for s in ACTIVE]))).all()
        return [_job(row) for row in found]

    def add_job(
        self,
        kind: JobKind,
        *,
        hosts: Sequence[str],
        parameters: Mapping[str, object],
        started_by: str,
        pool: str | None = None,
    ) -> Job:
        """A queued job on ``hosts`` (normalised MACs, in their order). Conflict while
        another queued or running job works on the pool or on one of the hosts. The
        oldest ended jobs beyond ``JOBS_KEPT`` are deleted."""
        now = time.time()
        with self._write() as conn:
            self._serialise(conn)
            for job in self._active_jobs(conn):
                if pool is not None and job.pool == pool:
                    raise Conflict(
                        f"pool {pool} has job {job.id} {job.state.value} already; follow it "
                        f"with `netinstall job follow {job.id}`"
                    )
                shared = [mac for mac in hosts if mac in job.macs]
                if shared:
                    raise Conflict(
                        f"host {shared[0]} is in job {job.id} ({job.state.value}) already; "
                        f"follow it with `netinstall job follow {job.id}`"
                    )
            values = {
                "kind": kind.value,
                "state": JobState.QUEUED.value,
                "pool": pool,
                "parameters": json.dumps(dict(parameters), sort_keys=True),
                "hosts": hosts_json([JobHost(mac) for mac in hosts]),
                "started_by": started_by,
                "created": now,
            }
            row = conn.execute(insert(jobs).values(values).returning(*jobs.c)).one()
            ended = select(jobs.c.id).where(jobs.c.state.not_in([s.value for s in ACTIVE]))
            oldest_kept = ended.order_by(jobs.c.id.desc()).offset(JOBS_KEPT).limit(1)
            cut = conn.execute(oldest_kept).scalar()
            if cut is not None:
                conn.execute(delete(jobs).where(jobs.c.id <= cut, jobs.c.id.in_(ended)))
        return _job(row)

    def job(self, job_id: int) -> Job | None:
        found = self._query(_JOB, {"id": job_id})
        return _job(found[0]) if found else None

    def jobs(self) -> list[Job]:
        """Every job kept, newest first."""
        return [_job(row) for row in self._query(_JOBS.order_by(jobs.c.id.desc()))]

    def claim_job(self, holder: str, now: float, lease: float) -> Job | None:
        """Take the oldest queued job, or a running one whose lease expired (its server
        died), for ``holder`` until ``now + lease``: one statement on either engine (on
        PostgreSQL ``FOR UPDATE SKIP LOCKED``, and the condition checked again on the row
        it locked, so two servers never both take one job). None: nothing to take."""
        params = {"now": now, "holder": holder, "until": now + lease}
        if not self._query(_ANY_CLAIMABLE, {"now": now}):  # idle: a read, no write lock
            return None
        with self._write() as conn:
            row = conn.execute(_CLAIM, params).first()
        return None if row is None else _job(row)

    def _held(self, conn: Connection, job_id: int, holder: str) -> Job:
        """The job (inside a write), its row locked, if ``holder`` runs it; else LeaseLost."""
        row = conn.execute(_HELD, {"id": job_id, "holder": holder}).first()
        if row is None:
            raise LeaseLost(f"job {job_id} is no longer run by {holder}")
        return _job(row)

    def renew_job(self, job_id: int, holder: str, now: float, lease: float) -> Job:
        """``holder``'s lease on the job renewed until ``now + lease``; LeaseLost if another
        server took it over meanwhile (or it ended)."""
        with self._write() as conn:
            job = self._held(conn, job_id, holder)
            conn.execute(_SET_JOB, {"where_id": job_id, "lease_until": now + lease})
        return replace(job, lease_until=now + lease)

    def job_progress(
        self,
        job_id: int,
        holder: str,
        now: float,
        *,
        hosts: Sequence[tuple[str, JobHostState, str | None]] = (),
        lines: Sequence[str] = (),
        end: tuple[JobState, str | None] | None = None,
    ) -> Job:
        """What ``holder``'s run of the job did: a host's progress, log lines, its end (the
        state and the reason; the lease given up). LeaseLost if it no longer runs it."""
        with self._write() as conn:
            job = self._held(conn, job_id, holder)
            for mac, state, note in hosts:
                job = job.host(mac, state, note)
            log, count = appended(job, now, lines)
            values: dict[str, object] = {
                "where_id": job_id,
                "hosts": hosts_json(job.hosts),
                "log": log_json(log),
                "log_count": count,
            }
            job = replace(job, log=log, log_count=count)
            if end is not None:
                values |= {"state": end[0].value, "reason": end[1], "ended": now}
                values["lease_until"] = now
                job = replace(job, state=end[0], reason=end[1], ended=now, lease_until=now)
            conn.execute(_SET_JOB, values)
        return job

    def release_job(self, job_id: int, holder: str, now: float) -> None:
        """``holder`` stops running the job (its server stops): any server may take it at
        once. Nothing if it no longer holds it."""
        with self._write() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.lease_holder == holder)
                .where(jobs.c.state == JobState.RUNNING.value)
                .values(lease_until=now)
            )

    def cancel_job(self, job_id: int, by: str) -> Job:
        """Cancel a job: a queued one at once; a running one stops before its next host
        (``cancel_requested``). Conflict for a job that ended."""
        now = time.time()
        with self._write() as conn:
            row = conn.execute(_JOB.with_for_update(), {"id": job_id}).first()
            if row is None:
                raise UnknownJob(f"no job {job_id}; see `netinstall job list`")
            job = _job(row)
            if not job.active:
                raise Conflict(f"job {job_id} is {job.state.value} already")
            if job.state is JobState.QUEUED:
                reason = f"cancelled by {by} before a server took it"
                log, count = appended(job, now, [reason])
                hosts = [replace(h, state=JobHostState.NOT_STARTED) for h in job.hosts]
                values = {
                    "state": JobState.CANCELLED.value,
                    "reason": reason,
                    "ended": now,
                    "cancel_requested": by,
                    "hosts": hosts_json(hosts),
                    "log": log_json(log),
                    "log_count": count,
                }
            else:
                values = {"cancel_requested": by}
            conn.execute(_SET_JOB, {"where_id": job_id, **values})
            row = conn.execute(_JOB, {"id": job_id}).one()
        return _job(row)

    def assign_for_job(
        self,
        job_id: int,
        holder: str,
        mac: str,
        work: Work | str,
        *,
        version: str | None,
        reboot: RebootPolicy | str,
    ) -> Host:
        """``assign_work`` for a job ``holder`` runs, in the transaction that checks it
        still does (LeaseLost, nothing assigned): a server that lost its lease never
        assigns a host work the server that took over assigns too. Lock order: the job's
        row, then the host's, then the counters row."""
        mac = normalise_mac(mac)
        kind = choice(Work, work, "work", AGENT_WORK)
        policy = choice(RebootPolicy, reboot, "reboot policy", tuple(RebootPolicy))
        with self._write() as conn:
            self._held(conn, job_id, holder)
            return self._assign(conn, mac, kind, version, policy)


def _job(row: Sequence[Any]) -> Job:
    return job_from(dict(zip(JOB_COLUMNS, row, strict=True)))


JOB_COLUMNS = tuple(c.name for c in jobs.c)
_POOL_HOSTS = select(pool_hosts.c.pool, pool_hosts.c.mac).order_by(
    pool_hosts.c.pool, pool_hosts.c.position
)
_POOL_HOSTS_OF = (
    select(pool_hosts.c.mac)
    .where(pool_hosts.c.pool == bindparam("pool"))
    .order_by(pool_hosts.c.position)
)
_POOL_OF = select(pool_hosts.c.pool).where(pool_hosts.c.mac == bindparam("mac"))
_JOBS = select(jobs)
_JOB = _JOBS.where(jobs.c.id == bindparam("id"))
_HELD = _JOB.where(
    jobs.c.lease_holder == bindparam("holder"), jobs.c.state == JobState.RUNNING.value
).with_for_update()
_SET_JOB = update(jobs).where(jobs.c.id == bindparam("where_id"))
_CLAIMABLE = or_(
    jobs.c.state == JobState.QUEUED.value,
    and_(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_until <= bindparam("now")),
)
_ANY_CLAIMABLE = select(jobs.c.id).where(_CLAIMABLE).limit(1)
_CLAIM = (
    update(jobs)
    .where(
        jobs.c.id
        == select(jobs.c.id)
        .where(_CLAIMABLE)
        .order_by(jobs.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery(),
        _CLAIMABLE,
    )
    .values(
        state=JobState.RUNNING.value,
        lease_holder=bindparam("holder"),
        lease_until=bindparam("until"),
        started=func.coalesce(jobs.c.started, bindparam("now")),
    )
    .returning(*jobs.c)
)
