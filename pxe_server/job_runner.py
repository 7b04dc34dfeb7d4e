"""The job runner of every ``server run``: it claims jobs and drives them (``pxe_server.jobs``).

    job = start_pool_upgrade(registry, request, started_by)   # checked, then queued
    runner = JobRunner(registry, holder_name(http_base)); runner.start() ... runner.stop()

The runner is one thread of its own (never the event loop's): when idle it looks for a
job every ``JOB_POLL`` seconds (``Registry.claim_job``: a queued job, or a running one
whose lease expired because its server died), then drives it with ``pool.rolling_upgrade``
(the sequencing ``netinstall pool upgrade`` ran in the CLI before), writing the job's
log lines and per-host progress as they happen. A host with a BMC that is off when its
upgrade is assigned is powered on through it (``bmc_control.power_on_for_work``; the
job's log says so, or why the BMC could not). Between its looks at a host it renews
its lease every ``LEASE_RENEW`` seconds; a host's work is assigned in the transaction
that checks the lease (``Registry.assign_for_job``). A cancelled job stops before its next
host. When the server stops, the runner gives the lease up (any server, or this one
restarted, takes the job at once, where it stood); when the server dies, the lease
expires after ``LEASE_SECONDS`` and another server takes it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.errors import InputError
from common.protocol.messages import JobHostState, JobKind, JobState, PoolUpgradeRequest
from pxe_server.bmc_control import power_on_for_work
from pxe_server.jobs import JOB_POLL, LEASE_RENEW, LEASE_SECONDS, Job, LeaseLost, UnknownPool
from pxe_server.model import Event, Host, RebootPolicy, Repository, Work
from pxe_server.pool import Pace, PoolPlan, plan_pool, rolling_upgrade, summary
from pxe_server.registry import Registry
from pxe_server.store import outage
from pxe_server.update_ops import UpdatePlan, rolling_update
from pxe_server.updates import HostUpdate

log = logging.getLogger("netinstall.jobs")
OUTAGE_LOG_EVERY = 60.0  # seconds between the runner's lines while the registry fails


def holder_name(where: str) -> str:
    """How a server names itself as a lease holder: its machine, process and address."""
    return f"{socket.gethostname()} pid {os.getpid()} ({where})"


def start_pool_upgrade(registry: Registry, request: PoolUpgradeRequest, started_by: str) -> Job:
    """A rolling upgrade queued as a job, after every check ``plan_pool`` makes (InputError
    listing every problem; Conflict while another job works on the pool or its hosts)."""
    master, members = request.master, request.members
    if request.pool is not None and master is None:
        if request.members:
            raise InputError("a named pool's members are its own: give no members with it")
        pool = registry.get_pool(request.pool)
        if pool is None:
            raise UnknownPool(f"no pool {request.pool!r}; see `netinstall pool list`")
        master, members = pool.master, pool.members
    elif request.pool is not None or master is None:
        raise InputError("a pool upgrade needs a named pool or a master (and members), not both")
    plan = plan_pool(registry, request.version, master, members)
    parameters = {"version": plan.version, "timeout": request.timeout, "poll": request.poll}
    return registry.add_job(
        JobKind.POOL_UPGRADE,
        hosts=plan.hosts,
        parameters=parameters,
        started_by=started_by,
        pool=request.pool,
    )


class _Stopping(Exception):
    """The server stops: the runner gives its job's lease up."""


@dataclass(frozen=True)
class _JobHosts:
    """``pool.PoolRegistry`` for a job: the registry's reads, and assignments made only
    while this server holds the job's lease."""

    registry: Registry
    job: int
    holder: str
    say: Callable[[str], None]  # a line of the job's log

    def get_host(self, mac: str) -> Host | None:
        return self.registry.get_host(mac)

    def last_event(self, mac: str) -> Event | None:
        return self.registry.last_event(mac)

    def repository(self, version: str) -> Repository | None:
        return self.registry.repository(version)

    def assign_work(
        self, mac: str, work: Work, *, version: str | None, reboot: RebootPolicy
    ) -> Host:
        host = self.registry.assign_for_job(
            self.job, self.holder, mac, work, version=version, reboot=reboot
        )
        if self.registry.bmc(mac) is not None:  # a host that is off would never check in
            self.say(power_on_for_work(self.registry, mac)[1])
        return host


@dataclass(frozen=True)
class _JobUpdateHosts:
    """``update_ops.UpdateHosts`` for a job: reads, and updates given only while this
    server holds the job's lease."""

    registry: Registry
    job: int
    holder: str
    update: str
    policy: RebootPolicy

    def get_host(self, mac: str) -> Host | None:
        return self.registry.get_host(mac)

    def host_updates_of(self, mac: str) -> list[HostUpdate]:
        return self.registry.host_updates_of(mac)

    def give(self, mac: str) -> HostUpdate:
        return self.registry.give_update_for_job(
            self.job, self.holder, mac, self.update, self.policy
        )


class JobRunner:
    """Claims and drives jobs on its own thread. ``clock`` is wall time (leases are
    compared across servers); ``wait(seconds)`` waits and says whether the runner is
    stopping (tests give a fake clock's)."""

    def __init__(
        self,
        registry: Registry,
        holder: str,
        *,
        lease: float = LEASE_SECONDS,
        renew: float = LEASE_RENEW,
        idle: float = JOB_POLL,
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.registry, self.holder = registry, holder
        self.lease, self.renew, self.idle = lease, renew, idle
        self.clock = clock
        self._stopping = threading.Event()
        self._wait = wait or self._stopping.wait
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop at the next wait; the job in hand (if any) is given up, not ended."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        quiet_until = -math.inf  # an outage is said once a minute, not every look
        while not self._stopping.is_set():
            try:
                ran = self.run_once()
            except Exception as exc:  # the database unreachable, say: look again later
                ran = None
                why = outage.reason(exc)
                if why is None:  # not an outage: a fault of ours, with its traceback
                    log.exception("job runner %s", self.holder)
                elif time.monotonic() >= quiet_until:
                    quiet_until = time.monotonic() + OUTAGE_LOG_EVERY
                    log.warning("job runner %s: the registry failed (%s); trying again "
                                "every %g s, said once a minute", self.holder, why,
                                self.idle)  # fmt: skip
            if ran is None and self._wait(self.idle):
                return

    def run_once(self) -> Job | None:
        """Claim a job and drive it until it ends, is lost or the runner stops: the job as
        this runner left it; None when there was none to claim."""
        job = self.registry.claim_job(self.holder, self.clock(), self.lease)
        if job is None:
            return None
        return _Drive(self, job).run()


class _Drive:
    """One claimed job driven to its end (or until its lease is lost or the server stops)."""

    def __init__(self, runner: JobRunner, job: Job) -> None:
        self.runner, self.job = runner, job
        self.registry, self.holder = runner.registry, runner.holder
        self.next_renew = runner.clock() + runner.renew

    def write(
        self,
        *,
        lines: Sequence[str] = (),
        hosts: Sequence[tuple[str, JobHostState, str | None]] = (),
        end: tuple[JobState, str | None] | None = None,
    ) -> None:
        for line in lines:
            log.info("job %d: %s", self.job.id, line)
        self.job = self.registry.job_progress(
            self.job.id, self.holder, self.runner.clock(), hosts=hosts, lines=lines, end=end
        )

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, renewing the lease when due; _Stopping if the server stops."""
        clock = self.runner.clock
        deadline = clock() + seconds
        while (left := deadline - clock()) > 0:
            if self.runner._wait(max(0.0, min(left, self.next_renew - clock()))):
                raise _Stopping
            if clock() >= self.next_renew:
                self.job = self.registry.renew_job(
                    self.job.id, self.holder, clock(), self.runner.lease
                )
                self.next_renew = clock() + self.runner.renew

    def cancelled(self) -> str | None:
        current = self.registry.job(self.job.id)
        if current is None or current.lease_holder != self.holder or not current.active:
            raise LeaseLost(f"job {self.job.id} is no longer run by {self.holder}")
        return (
            None if current.cancel_requested is None else f"cancelled by {current.cancel_requested}"
        )

    def run(self) -> Job:
        job = self.job
        try:
            again = job.log_count > 0  # a server ran it before (and died or stopped)
            self.write(lines=[f"{'taken over' if again else 'started'} by {self.holder}"])
            if job.kind is JobKind.UPDATE_APPLY:
                self.update_apply()
            else:
                self.pool_upgrade()
        except LeaseLost:
            log.warning("job %d: another server runs it now; this one stopped", job.id)
        except _Stopping:
            self.registry.release_job(job.id, self.holder, self.runner.clock())
            log.info("job %d: given up as the server stops; any server may take it", job.id)
        except Exception as exc:
            log.exception("job %d failed", job.id)
            try:
                self.write(end=(JobState.FAILED, f"the job runner failed: {exc}"))
            except Exception:  # the database is gone too: the lease runs out instead
                log.exception("job %d: cannot record its failure", job.id)
        return self.job

    def pace(self) -> Pace:
        parameters = self.job.parameters
        return Pace(
            timeout=float(parameters["timeout"]),
            poll=float(parameters["poll"]),
            clock=self.runner.clock,
            sleep=self.sleep,
            say=lambda line: self.write(lines=[line]),
            stop=self.cancelled,
            mark=lambda mac, state, note: self.write(hosts=[(mac, state, note)]),
        )

    def update_apply(self) -> None:
        parameters = self.job.parameters
        update = self.registry.known_update(str(parameters["update"]))
        policy = RebootPolicy(str(parameters["reboot"]))
        plan = UpdatePlan(update, self.job.macs)
        order = ", ".join(plan.hosts)
        self.write(
            lines=[f"applying {update.id} to {len(plan.hosts)} host(s), one at a time: {order}"]
        )
        hosts = _JobUpdateHosts(self.registry, self.job.id, self.holder, update.id, policy)
        result = rolling_update(hosts, plan, self.pace())
        left = [(mac, JobHostState.NOT_STARTED, None) for mac in result.not_started]
        if result.ok:
            line = f"update applied: {len(result.done)} host(s) have {update.id}"
            self.write(lines=[line], end=(JobState.DONE, None))
        else:
            state = JobState.CANCELLED if result.cancelled else JobState.FAILED
            self.write(lines=[f"update apply {summary(result, 'updated')}"], hosts=left,
                       end=(state, summary(result, "updated")))  # fmt: skip

    def pool_upgrade(self) -> None:
        parameters = self.job.parameters
        version = str(parameters["version"])
        plan = PoolPlan(version, self.job.macs)
        pace = self.pace()
        order = ", ".join(plan.hosts)
        self.write(
            lines=[f"upgrading {len(plan.hosts)} host(s) to {version}, one at a time: {order}"]
        )
        hosts = _JobHosts(
            self.registry, self.job.id, self.holder, lambda line: self.write(lines=[line])
        )
        result = rolling_upgrade(hosts, plan, pace)
        left = [(mac, JobHostState.NOT_STARTED, None) for mac in result.not_started]
        if result.ok:
            line = f"pool upgraded: {len(result.done)} host(s) run {version}"
            self.write(lines=[line], end=(JobState.DONE, None))
        else:
            state = JobState.CANCELLED if result.cancelled else JobState.FAILED
            self.write(lines=[f"pool upgrade {summary(result)}"], hosts=left,
                       end=(state, summary(result)))  # fmt: skip
