"""Named pools and server-side jobs: what they are, their rows, their records (no I/O).

A **pool** is a name, a master and members in their upgrade order; a host is in one
pool at most. A **job** is work a server does for the operator over minutes or hours (a
rolling ``pool upgrade`` today; updates to come) recorded in the registry, so that a
laptop that sleeps or a server that restarts leaves a record and not a half-done pool:

    queued ──(a server claims it: its lease)──> running ──> done | failed | cancelled
                                   ^── the lease expired: any server claims it again ─┘

While a server runs a job it holds the job's **lease** (``lease_holder`` until
``lease_until``) and renews it every ``LEASE_RENEW`` seconds; a server that dies stops
renewing, and ``LEASE_SECONDS`` after its last renewal any server (``job_runner``)
claims the job and goes on where it stood (hosts done are skipped, a host whose upgrade
is under way is followed, not assigned again). Every write a runner makes to its job,
and the assignment of a host's work, checks in the same transaction that it still holds
the lease (``LeaseLost`` otherwise), so no two servers drive one job.

The registry stores them (``Registry.add_job`` ...); ``job_runner`` runs them; the API
and the CLI show them as ``JobRecord``/``PoolRecord`` made here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from common.errors import InputError, NetinstallError
from common.protocol.messages import (
    MAX_POOL_HOSTS,
    MAX_POOL_NAME,
    JobHostRecord,
    JobHostState,
    JobKind,
    JobLine,
    JobRecord,
    JobState,
    PoolRecord,
)
from pxe_server.model import normalise_mac

# The bounds and paces of jobs (README "Pools and jobs"; each proved by a test).
LEASE_SECONDS = 30.0  # a job's lease: a server that stops renewing loses it after this
LEASE_RENEW = 10.0  # seconds between a running job's lease renewals
JOB_POLL = 2.0  # seconds between a runner's looks for a job to claim, when idle
JOB_LOG_LINES = 1000  # a job's log keeps its newest lines, this many
JOBS_KEPT = 1000  # ended jobs kept; the oldest beyond are deleted when a job is created

ACTIVE = (JobState.QUEUED, JobState.RUNNING)
_POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class UnknownPool(InputError):
    """No pool of that name (the API answers 404)."""


class UnknownJob(InputError):
    """No job of that number (the API answers 404)."""


class Conflict(InputError):
    """A request that clashes with what is under way (the API answers 409): a second job
    for a pool, a host in two jobs, a profile in use, a job ended already."""


class LeaseLost(NetinstallError):
    """This server no longer holds the job's lease (another took it over, or it was
    cancelled while queued): the runner drops the job and writes nothing more to it."""


@dataclass(frozen=True)
class Pool:
    name: str
    hosts: tuple[str, ...]  # the master first

    @property
    def master(self) -> str:
        return self.hosts[0]

    @property
    def members(self) -> tuple[str, ...]:
        return self.hosts[1:]


@dataclass(frozen=True)
class JobHost:
    mac: str
    state: JobHostState = JobHostState.WAITING
    note: str | None = None


@dataclass(frozen=True)
class Job:
    """A job as stored (``tables.jobs``)."""

    id: int
    kind: JobKind
    state: JobState
    pool: str | None
    parameters: Mapping[str, Any]
    hosts: tuple[JobHost, ...]
    started_by: str
    created: float
    started: float | None = None
    ended: float | None = None
    reason: str | None = None
    lease_holder: str | None = None
    lease_until: float | None = None
    cancel_requested: str | None = None
    log: tuple[JobLine, ...] = ()
    log_count: int = 0  # lines ever written (the newest JOB_LOG_LINES are kept)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def macs(self) -> tuple[str, ...]:
        return tuple(h.mac for h in self.hosts)

    def host(self, mac: str, state: JobHostState, note: str | None = None) -> Job:
        """This job with ``mac``'s progress set."""
        hosts = tuple(JobHost(mac, state, note) if h.mac == mac else h for h in self.hosts)
        return replace(self, hosts=hosts)


def pool_name(name: str) -> str:
    """``name`` as a pool's name; InputError saying what a name may hold."""
    if not (0 < len(name) <= MAX_POOL_NAME) or not _POOL_NAME.fullmatch(name):
        raise InputError(
            f"pool name {name[:MAX_POOL_NAME]!r}: 1 to {MAX_POOL_NAME} letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


def pool_size(count: int) -> None:
    if count > MAX_POOL_HOSTS:
        raise InputError(
            f"a pool has at most {MAX_POOL_HOSTS} hosts, master included; {count} given"
        )


def pool_macs(master: str, members: Sequence[str], problems: list[str]) -> Iterator[str]:
    """A pool's MACs normalised, the master first, each once, as they are given; one that
    is not a MAC, or one given again (naming whether as the master or a member), is
    appended to ``problems`` and skipped, so a caller lists every problem in order."""
    macs: list[str] = []
    for given in (master, *members):
        try:
            mac = normalise_mac(given)
        except InputError as exc:
            problems.extend(exc.problems)
            continue
        if mac in macs:
            role = "the master" if mac == macs[0] else "a member"
            problems.append(f"{mac} is given twice (already as {role})")
            continue
        macs.append(mac)
        yield mac


# -- rows --------------------------------------------------------------------------------


def hosts_json(hosts: Sequence[JobHost]) -> str:
    return json.dumps([[h.mac, h.state.value, h.note] for h in hosts])


def log_json(lines: Sequence[JobLine]) -> str:
    return json.dumps([[line.n, line.time, line.text] for line in lines])


def job_from(row: Mapping[str, Any]) -> Job:
    """A ``jobs`` row (by column name) as a Job."""
    hosts = tuple(JobHost(m, JobHostState(s), n) for m, s, n in json.loads(row["hosts"]))
    lines = tuple(JobLine(int(n), float(t), str(x)) for n, t, x in json.loads(row["log"]))
    return Job(
        id=int(row["id"]),
        kind=JobKind(row["kind"]),
        state=JobState(row["state"]),
        pool=row["pool"],
        parameters=json.loads(row["parameters"]),
        hosts=hosts,
        started_by=row["started_by"],
        created=float(row["created"]),
        started=row["started"],
        ended=row["ended"],
        reason=row["reason"],
        lease_holder=row["lease_holder"],
        lease_until=row["lease_until"],
        cancel_requested=row["cancel_requested"],
        log=lines,
        log_count=int(row["log_count"]),
    )


def appended(job: Job, time: float, texts: Sequence[str]) -> tuple[tuple[JobLine, ...], int]:
    """``job``'s log with ``texts`` added (the newest ``JOB_LOG_LINES`` kept), and the
    number of lines ever written."""
    lines = list(job.log)
    count = job.log_count
    for text in texts:
        count += 1
        lines.append(JobLine(count, time, text))
    return tuple(lines[-JOB_LOG_LINES:]), count


# -- records -----------------------------------------------------------------------------


def job_record(job: Job, log_after: int = 0) -> JobRecord:
    """``job`` as the API and ``job show --json`` give it; its log's lines after
    ``log_after`` only (a follower asks for what it has not printed yet)."""
    return JobRecord(
        id=job.id,
        kind=job.kind,
        state=job.state,
        pool=job.pool,
        parameters=dict(job.parameters),
        hosts=tuple(JobHostRecord(h.mac, h.state, h.note) for h in job.hosts),
        started_by=job.started_by,
        created=job.created,
        started=job.started,
        ended=job.ended,
        reason=job.reason,
        lease_holder=job.lease_holder,
        lease_until=job.lease_until,
        cancel_requested=job.cancel_requested,
        log=tuple(line for line in job.log if line.n > log_after),
    )


def pool_record(pool: Pool, job: int | None) -> PoolRecord:
    return PoolRecord(pool.name, pool.master, pool.members, job)
