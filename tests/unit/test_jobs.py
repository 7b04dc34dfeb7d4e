"""Named pools and server-side jobs in the registry, and the job runner with a fake clock
(pxe_server.jobs, pxe_server.job_runner): hosts are played by a fake agent that reports
running with the new version some time after its upgrade is assigned. On SQLite here;
tests/integration/test_jobs_postgresql.py runs the same functions on PostgreSQL."""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.errors import InputError
from common.protocol.messages import JobHostState, JobKind, JobState, PoolUpgradeRequest, Work
from pxe_server import jobs as jobs_module
from pxe_server.job_runner import JobRunner, start_pool_upgrade
from pxe_server.jobs import Conflict, LeaseLost, UnknownPool
from pxe_server.model import State
from pxe_server.registry import Registry, default_profile

OLD, NEW = "0.1.0", "0.2.0"
MASTER, A, B, C = (f"52:54:00:00:00:0{i}" for i in range(1, 5))


@pytest.fixture
def reg(registry_dir: Path) -> Iterator[Registry]:
    with Registry.open(registry_dir) as registry:
        registry.add_profile(default_profile())
        registry.add_repository(NEW, "/srv/repo-0.2.0")
        for mac in (MASTER, A, B, C):
            registry.add_host(mac)
            registry.record_event(mac, State.INSTALLED)
            registry.record_event(mac, State.RUNNING, facts={"payload_version": OLD})
        yield registry


@dataclass
class Fleet:
    """A fake clock, and the hosts' agents: a host given an upgrade reports through to
    running ``NEW`` ``takes`` seconds later (or fails, for a MAC in ``failing``)."""

    registry: Registry
    now: float = 1_000_000.0
    takes: float = 30.0
    failing: set[str] = field(default_factory=set)
    assigned: dict[str, list[float]] = field(default_factory=dict)  # mac -> assignment times

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        self.agents()
        return False

    def agents(self) -> None:
        for host in self.registry.list_hosts():
            if host.work is not Work.UPGRADE or host.state is State.FAILED:
                continue
            if host.state is State.PENDING and host.mac not in self.assigned:
                self.assigned[host.mac] = [self.now]
            began = self.assigned[host.mac][0]
            if self.now - began < self.takes:
                continue
            if host.mac in self.failing:
                self.registry.record_event(host.mac, State.FAILED, message="no disk")
            else:
                self.registry.record_event(host.mac, State.INSTALLED)
                self.registry.record_event(host.mac, State.RUNNING, facts={"payload_version": NEW})
            del self.assigned[host.mac]

    def runner(self, holder: str = "server-1", **kwargs: float) -> JobRunner:
        return JobRunner(self.registry, holder, clock=self.clock, wait=self.wait, **kwargs)


def upgrade(reg: Registry, **given: object) -> int:
    values: dict[str, object] = {"version": NEW, "poll": 5.0, "timeout": 600.0} | given
    if "pool" not in values and "master" not in values:
        values |= {"master": MASTER, "members": (A, B)}
    return start_pool_upgrade(reg, PoolUpgradeRequest(**values), "alice").id  # type: ignore[arg-type]


def assignments(reg: Registry, mac: str) -> int:
    return sum(1 for e in reg.events(mac) if (e.message or "").startswith("assigned: upgrade"))


# -- pools ---------------------------------------------------------------------------


def test_a_pool_is_a_master_and_members_in_order(reg: Registry) -> None:
    pool = reg.create_pool("rack1", "52-54-00-00-00-03", [MASTER, A])
    assert (pool.master, pool.members) == (B, (MASTER, A))
    assert reg.get_pool("rack1") == pool
    assert reg.pools() == [pool]
    assert reg.pool_of(A) == "rack1"
    assert reg.add_to_pool("rack1", C).hosts == (B, MASTER, A, C)
    assert reg.remove_from_pool("rack1", MASTER).hosts == (B, A, C)
    assert reg.add_to_pool("rack1", MASTER).hosts == (B, A, C, MASTER)
    reg.delete_pool("rack1")
    assert reg.pools() == []
    assert reg.get_pool("rack1") is None
    assert reg.get_host(A) is not None  # its hosts stay


def test_pool_refusals(reg: Registry) -> None:
    reg.create_pool("one", MASTER, [A])
    with pytest.raises(Conflict, match=f"host {A} is in pool one already"):
        reg.create_pool("two", B, [A])
    with pytest.raises(Conflict, match="pool one exists already"):
        reg.create_pool("one", B)
    with pytest.raises(InputError) as caught:
        reg.create_pool("two", B, [B, "52:54:00:00:00:99", "x"])
    assert caught.value.problems == (
        f"{B} is given twice (already as the master)",
        "'x' is not a MAC address; expected e.g. 52:54:00:12:34:56",
    )
    with pytest.raises(InputError, match="no host 52:54:00:00:00:99 in the registry"):
        reg.create_pool("two", B, ["52:54:00:00:00:99"])
    with pytest.raises(InputError, match="pool name 'a b'"):
        reg.create_pool("a b", B)
    with pytest.raises(Conflict, match=f"host {MASTER} is the master of pool one"):
        reg.remove_from_pool("one", MASTER)
    with pytest.raises(InputError, match=f"host {B} is not in pool one"):
        reg.remove_from_pool("one", B)
    with pytest.raises(UnknownPool, match="no pool 'nope'"):
        reg.add_to_pool("nope", B)
    assert reg.pools()[0].hosts == (MASTER, A)  # nothing of it was written


def test_a_pool_has_at_most_max_pool_hosts(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_module, "MAX_POOL_HOSTS", 3)
    with pytest.raises(InputError, match="a pool has at most 3 hosts, master included; 4 given"):
        reg.create_pool("big", MASTER, [A, B, C])
    reg.create_pool("big", MASTER, [A, B])
    with pytest.raises(InputError, match="at most 3 hosts"):
        reg.add_to_pool("big", C)


def test_removing_a_host_drops_it_from_its_pool_but_not_a_master(reg: Registry) -> None:
    reg.create_pool("one", MASTER, [A, B])
    reg.delete_host(A)
    pool = reg.get_pool("one")
    assert pool is not None
    assert pool.hosts == (MASTER, B)
    with pytest.raises(Conflict, match=f"host {MASTER} is the master of pool one; delete the pool"):
        reg.delete_host(MASTER)
    assert reg.get_host(MASTER) is not None


# -- profiles ------------------------------------------------------------------------


def test_a_profile_in_use_is_not_removed(reg: Registry) -> None:
    reg.add_profile(default_profile().__class__(name="p2", template="x"))
    reg.update_host(A, profile="p2")
    reg.update_host(B, profile="p2")
    with pytest.raises(Conflict, match="profile 'p2' is used by 2 host"):
        reg.delete_profile("p2")
    reg.update_host(A, profile="default")
    reg.update_host(B, profile="default")
    reg.delete_profile("p2")
    assert reg.get_profile("p2") is None
    with pytest.raises(InputError, match="no profile 'p2'"):
        reg.delete_profile("p2")
    with pytest.raises(Conflict, match="the default profile cannot be removed"):
        reg.delete_profile("default")


# -- jobs: creation ------------------------------------------------------------------


def test_a_job_is_checked_then_queued(reg: Registry) -> None:
    job = reg.job(upgrade(reg))
    assert job is not None
    assert (job.state, job.macs, job.started_by, job.pool) == (
        JobState.QUEUED, (MASTER, A, B), "alice", None,
    )  # fmt: skip
    assert job.parameters == {"version": NEW, "timeout": 600.0, "poll": 5.0}
    assert all(h.state is JobHostState.WAITING for h in job.hosts)
    assert reg.get_host(MASTER).work is None  # type: ignore[union-attr]  # nothing assigned yet
    with pytest.raises(InputError, match=r"version 9\.9 is not registered"):
        upgrade(reg, version="9.9", master=C)


def test_one_job_per_pool_and_per_host(reg: Registry) -> None:
    reg.create_pool("rack1", MASTER, [A])
    first = upgrade(reg, pool="rack1")
    with pytest.raises(Conflict, match=f"pool rack1 has job {first} queued already"):
        upgrade(reg, pool="rack1")
    with pytest.raises(Conflict, match=f"host {A} is in job {first} \\(queued\\) already"):
        upgrade(reg, master=C, members=(A,))
    with pytest.raises(Conflict, match=f"pool rack1 has job {first} queued; cancel it first"):
        reg.delete_pool("rack1")
    with pytest.raises(UnknownPool, match="no pool 'nope'"):
        upgrade(reg, pool="nope")
    with pytest.raises(InputError, match="a named pool or a master"):
        upgrade(reg, pool="rack1", master=C)
    reg.cancel_job(first, "bob")
    assert upgrade(reg, pool="rack1") > first  # the cancelled one no longer counts


def test_ended_jobs_beyond_jobs_kept_are_deleted(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pxe_server.registry_pools as registry_module

    monkeypatch.setattr(registry_module, "JOBS_KEPT", 2)
    made = []
    for _ in range(4):
        made.append(upgrade(reg, master=C, members=()))
        reg.cancel_job(made[-1], "bob")
    queued = upgrade(reg, master=C, members=())
    assert [job.id for job in reg.jobs()] == [queued, made[3], made[2]]


# -- the runner ----------------------------------------------------------------------


def test_the_runner_upgrades_master_first_then_one_at_a_time(reg: Registry) -> None:
    fleet = Fleet(reg)
    job_id = upgrade(reg)
    runner = fleet.runner()
    began = fleet.now
    job = runner.run_once()
    assert job is not None
    assert job.id == job_id
    assert job.state is JobState.DONE
    assert job.reason is None
    assert [(h.mac, h.state) for h in job.hosts] == [(m, JobHostState.DONE) for m in (MASTER, A, B)]
    texts = [line.text for line in job.log]
    assert texts[0] == "started by server-1"
    assert texts[-1] == f"pool upgraded: 3 host(s) run {NEW}"
    order = [t.split()[0].rstrip(":") for t in texts if t.endswith("assigned")]
    assert order == [MASTER, A, B]
    for mac in (MASTER, A, B):
        assert reg.get_host(mac).running_version == NEW  # type: ignore[union-attr]
        assert assignments(reg, mac) == 1
    assert reg.get_host(C).running_version == OLD  # type: ignore[union-attr]
    assert fleet.now - began >= 3 * fleet.takes
    assert runner.run_once() is None  # nothing left to claim


def test_a_member_with_a_bmc_is_powered_on_for_its_upgrade_or_the_log_says_why_not(
    reg: Registry,
) -> None:
    """A's BMC listens nowhere (a closed loopback port): the job's log says so in one
    sentence and the upgrade goes on (the host may be on). A real BMC powering a host on
    for its work: tests/integration/test_bmc_emulators.py."""
    from common.protocol.messages import BmcSpec
    from pxe_server.bmc_control import set_host_bmc

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"redfish+http://admin@127.0.0.1:{port}"
    set_host_bmc(reg, A, BmcSpec(url, "bmc-password"))
    upgrade(reg)
    job = Fleet(reg).runner().run_once()
    assert job is not None
    assert job.state is JobState.DONE
    texts = [line.text for line in job.log]
    (said,) = [t for t in texts if "BMC" in t]
    assert said.startswith(f"{A}: its BMC could not power it on: the Redfish BMC {url} cannot")
    assert texts.index(said) == texts.index(f"{A}: upgrade to {NEW} assigned") - 1
    assert all("bmc-password" not in t for t in texts)


def test_the_first_failure_stops_the_job_and_names_the_rest(reg: Registry) -> None:
    fleet = Fleet(reg, failing={A})
    upgrade(reg)
    job = fleet.runner().run_once()
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.reason == (
        f"stopped at {A}: it failed; last state failed, last message: no disk; "
        f"upgraded: {MASTER}; not started: {B}"
    )
    assert [h.state for h in job.hosts] == [
        JobHostState.DONE, JobHostState.FAILED, JobHostState.NOT_STARTED,
    ]  # fmt: skip
    assert assignments(reg, B) == 0


def test_cancel_stops_before_the_next_host(reg: Registry) -> None:
    fleet = Fleet(reg)
    job_id = upgrade(reg)
    original = fleet.wait

    def wait(seconds: float) -> bool:  # cancelled while the master upgrades
        if fleet.now > 1_000_010 and reg.job(job_id).cancel_requested is None:  # type: ignore[union-attr]
            reg.cancel_job(job_id, "bob")
        return original(seconds)

    runner = JobRunner(reg, "server-1", clock=fleet.clock, wait=wait)
    job = runner.run_once()
    assert job is not None
    assert job.state is JobState.CANCELLED
    assert job.reason == f"cancelled by bob; upgraded: {MASTER}; not started: {A}, {B}"
    assert reg.get_host(MASTER).running_version == NEW  # type: ignore[union-attr]
    assert assignments(reg, A) == 0
    with pytest.raises(Conflict, match=f"job {job_id} is cancelled already"):
        reg.cancel_job(job_id, "bob")


def test_a_queued_job_cancelled_is_never_run(reg: Registry) -> None:
    fleet = Fleet(reg)
    job_id = upgrade(reg)
    job = reg.cancel_job(job_id, "bob")
    assert job.state is JobState.CANCELLED
    assert job.reason == "cancelled by bob before a server took it"
    assert fleet.runner().run_once() is None


def test_a_lease_not_renewed_is_taken_over_and_no_host_is_assigned_twice(reg: Registry) -> None:
    fleet = Fleet(reg)
    job_id = upgrade(reg)
    first = fleet.runner("server-1")
    claimed = reg.claim_job("server-1", fleet.now, first.lease)
    assert claimed is not None
    assert claimed.id == job_id
    # server-1 starts, assigns the master's upgrade, then dies (it never renews its lease)
    reg.job_progress(job_id, "server-1", fleet.now, lines=["started by server-1"])
    reg.assign_for_job(job_id, "server-1", MASTER, Work.UPGRADE, version=NEW, reboot="auto")
    second = fleet.runner("server-2")
    assert second.run_once() is None  # the lease still holds
    fleet.wait(jobs_module.LEASE_SECONDS + 1)
    job = second.run_once()
    assert job is not None
    assert job.state is JobState.DONE
    assert job.lease_holder == "server-2"
    assert any(line.text == "taken over by server-2" for line in job.log)
    assert any("is under way; following it" in line.text for line in job.log)
    assert [assignments(reg, mac) for mac in (MASTER, A, B)] == [1, 1, 1]
    with pytest.raises(LeaseLost):  # the dead server, back, cannot touch it
        reg.assign_for_job(job_id, "server-1", C, Work.UPGRADE, version=NEW, reboot="auto")
    with pytest.raises(LeaseLost):
        reg.renew_job(job_id, "server-1", fleet.now, 30)


def test_the_runner_renews_its_lease_while_it_waits(reg: Registry) -> None:
    fleet = Fleet(reg, takes=200)  # each host takes longer than a lease
    job_id = upgrade(reg, master=C, members=())
    renewals: list[float] = []
    original = reg.renew_job

    def renew(job: int, holder: str, now: float, lease: float) -> object:
        renewals.append(now)
        taken = reg.claim_job("server-2", now, 30)  # never: the lease is renewed in time
        assert taken is None
        return original(job, holder, now, lease)

    reg.renew_job = renew  # type: ignore[method-assign,assignment]
    job = fleet.runner().run_once()
    assert job is not None
    assert job.id == job_id
    assert job.state is JobState.DONE
    gaps = [b - a for a, b in itertools.pairwise(renewals)]
    assert renewals
    assert max(gaps) <= jobs_module.LEASE_RENEW + 1e-6


def test_a_stopping_server_gives_its_job_up_and_a_restart_resumes_it(reg: Registry) -> None:
    fleet = Fleet(reg)
    job_id = upgrade(reg)
    calls = 0

    def wait(seconds: float) -> bool:  # the server stops once the master is done
        nonlocal calls
        calls += 1
        fleet.wait(seconds)
        return reg.get_host(MASTER).running_version == NEW  # type: ignore[union-attr]

    stopped = JobRunner(reg, "server-1", clock=fleet.clock, wait=wait).run_once()
    assert stopped is not None
    assert stopped.state is JobState.RUNNING
    assert reg.job(job_id).lease_until <= fleet.now  # type: ignore[union-attr,operator]
    job = fleet.runner("server-1 restarted").run_once()  # at once: no lease to wait for
    assert job is not None
    assert job.state is JobState.DONE
    assert any(f"{MASTER} (master): already runs {NEW}; skipped" == line.text for line in job.log)
    assert [assignments(reg, mac) for mac in (MASTER, A, B)] == [1, 1, 1]


def test_a_job_log_keeps_its_newest_lines(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_module, "JOB_LOG_LINES", 5)
    fleet = Fleet(reg)
    upgrade(reg)
    job = fleet.runner().run_once()
    assert job is not None
    assert len(job.log) == 5
    assert job.log[-1].n == job.log_count > 5
    assert job.log[-1].text == f"pool upgraded: 3 host(s) run {NEW}"


def test_a_registry_at_revision_8_gets_pools_and_jobs(registry_dir: Path) -> None:
    """Revisions 0009 to 0012 apply to a registry Alembic left at the baseline (either
    engine)."""
    from sqlalchemy import text

    from tests.registry_engines import execute

    Registry.open(registry_dir).close()
    execute(
        registry_dir,
        text("DROP TABLE host_updates"),
        text("DROP TABLE update_facts"),
        text("DROP TABLE updates"),
        text("DROP TABLE power_requests"),
        text("DROP TABLE host_segments"),
        text("DROP TABLE servers"),
        text("DROP TABLE bmcs"),
        text("DROP TABLE pool_hosts"),
        text("DROP TABLE pools"),
        text("DROP TABLE jobs"),
        text("UPDATE alembic_version SET version_num = '0008'"),
    )
    with Registry.open(registry_dir) as registry:
        registry.add_profile(default_profile())
        registry.add_host(MASTER)
        assert registry.create_pool("rack1", MASTER).hosts == (MASTER,)
        assert registry.jobs() == []
    (version,) = execute(registry_dir, text("SELECT version_num FROM alembic_version"))[0]
    assert tuple(version) == ("0012",)


def test_an_idle_runner_looks_for_a_job_every_job_poll_seconds(reg: Registry) -> None:
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) == 3  # the server stops at the third wait

    runner = JobRunner(reg, "server-1", wait=wait)
    runner._loop()
    assert waits == [jobs_module.JOB_POLL] * 3
    assert jobs_module.JOB_POLL == 2.0


def test_following_a_job_polls_each_second_and_says_when_no_server_takes_it() -> None:
    from common.protocol.messages import JobLine, JobRecord
    from netinstall import cli_job

    now = [0.0]
    asked: list[tuple[int, float]] = []

    class Fleet:
        def job(self, job_id: int, log_after: int = 0) -> JobRecord:
            asked.append((log_after, now[0]))
            state = JobState.QUEUED if now[0] < 15 else JobState.DONE
            lines = (JobLine(1, 20.0, "pool upgraded"),) if state is JobState.DONE else ()
            return JobRecord(
                id=job_id, kind=JobKind.POOL_UPGRADE, state=state, pool=None,
                parameters={}, hosts=(), started_by="alice", created=0.0, started=None,
                ended=None, reason=None, lease_holder=None, lease_until=None,
                cancel_requested=None, log=lines,
            )  # fmt: skip

    def sleep(seconds: float) -> None:
        now[0] += seconds

    said: list[tuple[float, str]] = []
    record = cli_job.follow(
        Fleet(),  # type: ignore[arg-type]
        3,
        echo=lambda line: said.append((now[0], line)),
        sleep=sleep,
        clock=lambda: now[0],
    )
    assert record.state is JobState.DONE
    assert [t for _, t in asked] == [float(i) * cli_job.FOLLOW_POLL for i in range(16)]
    notices = [t for t, line in said if "is still queued: no server has taken it" in line]
    assert notices == [cli_job.QUEUED_NOTICE]  # once, QUEUED_NOTICE seconds in
    assert said[-1] == (15.0, "[    20 s] pool upgraded")


def test_the_runner_says_a_registry_outage_once_a_minute_and_a_fault_with_its_traceback(
    reg: Registry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    looks = iter(range(4))

    def wait(_seconds: float) -> bool:
        return next(looks, None) is None  # stops after the fifth look

    runner = JobRunner(reg, "server-1", wait=wait)
    gone = sqlite3.OperationalError("disk I/O error")
    gone.sqlite_errorcode = sqlite3.SQLITE_IOERR
    faults: list[Exception] = [OperationalError("SELECT", {}, gone) for _ in range(4)]
    faults.append(ValueError("a fault of ours"))

    def run_once() -> None:
        raise faults.pop(0)

    monkeypatch.setattr(runner, "run_once", run_once)
    caplog.set_level(logging.WARNING, logger="netinstall.jobs")
    runner._loop()
    said = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert said == [
        ("WARNING", "job runner server-1: the registry failed (disk I/O error); trying "
         "again every 2 s, said once a minute", False),
        ("ERROR", "job runner server-1", True),
    ]  # fmt: skip
