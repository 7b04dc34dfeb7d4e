"""Rolling upgrade of a pool (SPEC §1, §10; seed 000 ch.7 "automatic mode").

    plan = plan_pool(registry, version, master, members)   # every check first
    result = rolling_upgrade(registry, plan, Pace(timeout, poll, clock, sleep, say))
    # = roll(Upgrade(registry, version), plan, pace): the sequence any rolling operation
    #   (an update's apply: update_ops.UpdateRollout) runs with its own steps

The master is upgraded first, then each member in the order given, one at a time:
the next one starts only after the previous one reported ``running`` with the new
version (and its work was cleared). The first host that reports ``failed``, runs
another version, loses its work or times out stops the run; hosts not started yet
are left alone. Hosts that already run the version with no work left are skipped,
and a host whose upgrade to the version is under way (assigned by an earlier run: a
job taken over from a server that died) is followed, not assigned again, so a stopped
run can simply be started again.

A server-side job (``job_runner``) gives the run two more hooks in its ``Pace``: ``stop``,
asked before each host is started (a reason to stop: the job was cancelled), and
``mark``, told where the run stands with each host (the job's per-host progress).

Clock, sleep and output are injected and the registry is a small protocol, so the
sequencing is tested with a fake clock and a fake registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from common.errors import InputError
from common.protocol.messages import JobHostState
from pxe_server.jobs import pool_macs
from pxe_server.model import Event, Host, RebootPolicy, Repository, State, Work


class PoolRegistry(Protocol):
    """What the rolling upgrade needs of ``registry.Registry``."""

    def get_host(self, mac: str) -> Host | None: ...

    def last_event(self, mac: str) -> Event | None: ...

    def repository(self, version: str) -> Repository | None: ...

    def assign_work(
        self, mac: str, work: Work, *, version: str | None, reboot: RebootPolicy
    ) -> Host: ...


@dataclass(frozen=True)
class PoolPlan:
    version: str
    hosts: tuple[str, ...]  # normalised MACs, the master first


@dataclass(frozen=True)
class PoolResult:
    plan: PoolPlan
    done: tuple[str, ...] = ()  # upgraded by this run, or already running the version
    stopped_at: str | None = None
    reason: str | None = None  # why it stopped: one sentence about ``stopped_at``
    not_started: tuple[str, ...] = field(default=())
    cancelled: bool = False  # ``Pace.stop`` stopped it before ``not_started[0]``

    @property
    def ok(self) -> bool:
        return self.stopped_at is None and not self.cancelled


def plan_pool(
    registry: PoolRegistry, version: str, master: str, members: Sequence[str]
) -> PoolPlan:
    """Check everything before anything is assigned; InputError listing every problem.

    The version must be a registered repository; every MAC must be a known host
    with an agent credential (it reported running before); no host may be given twice.
    """
    problems: list[str] = []
    if registry.repository(version) is None:
        problems.append(f"version {version} is not registered; see `netinstall server repo list`")
    macs: list[str] = []
    for mac in pool_macs(master, members, problems):
        macs.append(mac)
        host = registry.get_host(mac)
        if host is None:
            problems.append(f"no host {mac} in the registry")
        elif host.agent_credential_hash is None:
            problems.append(
                f"host {mac} has never reported running, so it has no agent to upgrade it"
            )
    if problems:
        raise InputError(problems)
    return PoolPlan(version, tuple(macs))


@dataclass(frozen=True)
class Pace:
    """How the run waits and talks: seconds per host, seconds between polls, the clock,
    sleep and the output (one line per call)."""

    timeout: float
    poll: float
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    say: Callable[[str], None]
    stop: Callable[[], str | None] = lambda: None  # before each host: a reason to stop
    mark: Callable[[str, JobHostState, str | None], None] = lambda mac, state, note: None


def _upgraded(host: Host, version: str) -> bool:
    return host.state is State.RUNNING and host.work is None and host.running_version == version


def _describe(host: Host, last: Event | None) -> str:
    state = host.state.value + (f" ({host.step})" if host.step else "")
    message = last.message if last is not None and last.message else "none"
    return f"last state {state}, last message: {message}"


def wait_for_upgrade(registry: PoolRegistry, mac: str, version: str, pace: Pace) -> str | None:
    """Poll until ``mac`` runs ``version``: None, or why it will not (one sentence).

    Says one line per state change, with the seconds since the wait began.
    """
    began = pace.clock()
    seen: State | None = None
    while True:
        host = registry.get_host(mac)
        elapsed = pace.clock() - began
        if host is None:
            return "it was removed from the registry"
        if host.state is not seen:
            seen = host.state
            step = f" ({host.step})" if host.step else ""
            pace.say(f"{mac}: {host.state.value}{step} after {elapsed:.0f} s")
        if _upgraded(host, version):
            return None
        why = None
        if host.state is State.FAILED:
            why = "it failed"
        elif host.state is State.RUNNING and host.work is None:
            why = f"it reported running version {host.running_version}, not {version}"
        elif host.work is not Work.UPGRADE or host.assigned_version != version:
            why = f"its work was changed meanwhile (now {host.work or 'none'})"
        elif elapsed >= pace.timeout:
            why = f"it timed out after {elapsed:.0f} s"
        if why is not None:
            return f"{why}; {_describe(host, registry.last_event(mac))}"
        pace.sleep(pace.poll)


def _under_way(host: Host, version: str) -> bool:
    """Whether ``host``'s upgrade to ``version`` was assigned and has not ended."""
    return (
        host.work is Work.UPGRADE
        and host.assigned_version == version
        and host.state is not State.FAILED
    )


@dataclass(frozen=True)
class Seen:
    """Where a host stands in a rolling operation, as its ``Rollout`` reads it."""

    skipped: tuple[str, str] | None = None  # it has what the rollout gives: (said, marked)
    following: str | None = None  # what it was given is under way: said


class Rollout(Protocol):
    """What a rolling operation does to each host (``roll`` is the sequence): a pool
    upgrade (``Upgrade``) or an update's apply (``update_ops.UpdateRollout``)."""

    @property
    def working(self) -> JobHostState: ...  # how a host is marked while it works

    @property
    def refused(self) -> str: ...  # the start of the sentence when the work cannot be given

    def look(self, mac: str) -> Seen: ...

    def give(self, mac: str) -> str: ...  # the work given (InputError: refused); said

    def wait(self, mac: str, pace: Pace) -> str | None: ...  # None, or why it failed

    def finished(self, mac: str) -> str: ...  # said when the host is done


def roll(rollout: Rollout, plan: PoolPlan, pace: Pace) -> PoolResult:
    """``rollout`` to ``plan.hosts`` one at a time, master first; stop at the first failure.
    A host that has it already is skipped; one where it is under way is followed."""
    done: list[str] = []
    for index, mac in enumerate(plan.hosts):
        role = " (master)" if index == 0 else ""
        rest = plan.hosts[index + 1 :]
        seen = rollout.look(mac)
        if seen.skipped is not None:
            pace.say(f"{mac}{role}: {seen.skipped[0]}")
            pace.mark(mac, JobHostState.SKIPPED, seen.skipped[1])
            done.append(mac)
            continue
        if seen.following is not None:
            pace.say(f"{mac}{role}: {seen.following}")
        else:
            cancelled = pace.stop()
            if cancelled is not None:
                return PoolResult(plan, tuple(done), None, cancelled, plan.hosts[index:], True)
            try:
                given = rollout.give(mac)
            except InputError as exc:  # changed since the plan was checked
                reason = f"{rollout.refused}: {' '.join(exc.problems)}"
                pace.mark(mac, JobHostState.FAILED, reason)
                return PoolResult(plan, tuple(done), mac, reason, rest)
            pace.say(f"{mac}{role}: {given}")
        pace.mark(mac, rollout.working, None)
        why = rollout.wait(mac, pace)
        if why is not None:
            pace.mark(mac, JobHostState.FAILED, why)
            return PoolResult(plan, tuple(done), mac, why, rest)
        pace.say(f"{mac}{role}: {rollout.finished(mac)}")
        pace.mark(mac, JobHostState.DONE, None)
        done.append(mac)
    return PoolResult(plan, tuple(done))


@dataclass(frozen=True)
class Upgrade:
    """A pool upgrade to ``version``, host by host (a ``Rollout``)."""

    registry: PoolRegistry
    version: str
    working: JobHostState = JobHostState.UPGRADING
    refused: str = "the upgrade could not be assigned"

    def look(self, mac: str) -> Seen:
        host = self.registry.get_host(mac)
        if host is not None and _upgraded(host, self.version):
            return Seen(skipped=(f"already runs {self.version}; skipped",
                                 f"already ran {self.version}"))  # fmt: skip
        if host is not None and _under_way(host, self.version):
            return Seen(following=f"its upgrade to {self.version} is under way; following it")
        return Seen()

    def give(self, mac: str) -> str:
        self.registry.assign_work(mac, Work.UPGRADE, version=self.version, reboot=RebootPolicy.AUTO)
        return f"upgrade to {self.version} assigned"

    def wait(self, mac: str, pace: Pace) -> str | None:
        return wait_for_upgrade(self.registry, mac, self.version, pace)

    def finished(self, mac: str) -> str:
        return f"runs {self.version}"


def rolling_upgrade(registry: PoolRegistry, plan: PoolPlan, pace: Pace) -> PoolResult:
    """Upgrade ``plan.hosts`` one at a time, master first; stop at the first failure."""
    return roll(Upgrade(registry, plan.version), plan, pace)


def summary(result: PoolResult, done_word: str = "upgraded") -> str:
    """Why a run stopped, as one sentence after "pool upgrade " (or "update apply "): what
    was done and not."""
    done = ", ".join(result.done) or "none"
    rest = ", ".join(result.not_started) or "none"
    if result.cancelled:
        return f"{result.reason}; {done_word}: {done}; not started: {rest}"
    return (
        f"stopped at {result.stopped_at}: {result.reason}; {done_word}: {done}; not started: {rest}"
    )
