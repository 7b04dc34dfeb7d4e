"""The rolling pool upgrade's sequencing (pxe_server.pool) with a fake clock and registry.

Each fake host follows a script once its upgrade is assigned: after so many seconds
it reaches a state (the agent and the installer, played by the fake).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from common.errors import InputError
from pxe_server.model import Event, Host, RebootPolicy, Repository, State, Work
from pxe_server.pool import Pace, PoolPlan, PoolResult, plan_pool, rolling_upgrade

V = "0.2.0"
MASTER, A, B = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"

Step = tuple[float, State, str | None]  # seconds after assignment, state, message
GOOD: list[Step] = [
    (5, State.SIGNALLED, None),
    (20, State.INSTALLING, None),
    (300, State.INSTALLED, None),
    (400, State.RUNNING, None),
]
FAILS: list[Step] = [(5, State.SIGNALLED, None), (60, State.FAILED, "sha256 mismatch")]
STUCK: list[Step] = [(5, State.SIGNALLED, None)]


@dataclass
class FakeRegistry:
    hosts: dict[str, Host]
    scripts: dict[str, list[Step]] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)  # version it runs after the script
    now: float = 0.0
    assigned: dict[str, float] = field(default_factory=dict)  # mac -> time of assignment
    messages: dict[str, str] = field(default_factory=dict)

    def get_host(self, mac: str) -> Host | None:
        return self.hosts.get(mac)

    def last_event(self, mac: str) -> Event | None:
        host = self.hosts[mac]
        return Event(self.now, mac, host.state, message=self.messages.get(mac))

    def repository(self, version: str) -> Repository | None:
        return Repository(version, f"/srv/{version}") if version == V else None

    def assign_work(
        self, mac: str, work: Work, *, version: str | None, reboot: RebootPolicy
    ) -> Host:
        assert (work, version, reboot) == (Work.UPGRADE, V, RebootPolicy.AUTO)
        host = replace(
            self.hosts[mac], state=State.PENDING, work=Work.UPGRADE, assigned_version=version
        )
        self.hosts[mac] = host
        self.assigned[mac] = self.now
        return host

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for mac, began in self.assigned.items():
            for after, state, message in self.scripts.get(mac, GOOD):
                host = self.hosts[mac]
                if self.now - began >= after and host.state is not state:
                    if STATE_RANK[state] <= STATE_RANK[host.state]:
                        continue
                    changes: dict[str, object] = {"state": state}
                    if state is State.RUNNING:
                        changes |= {"work": None, "running_version": self.runs.get(mac, V)}
                    self.hosts[mac] = replace(host, **changes)  # type: ignore[arg-type]
                    if message:
                        self.messages[mac] = message


STATE_RANK = {
    State.PENDING: 0,
    State.SIGNALLED: 1,
    State.INSTALLING: 2,
    State.INSTALLED: 3,
    State.RUNNING: 4,
    State.FAILED: 5,
}


def running(mac: str, version: str = "0.1.0", credential: str | None = "cred") -> Host:
    return Host(
        mac=mac, state=State.RUNNING, running_version=version, agent_credential_hash=credential
    )


def pool(**scripts: list[Step]) -> FakeRegistry:
    hosts = {mac: running(mac) for mac in (MASTER, A, B)}
    names = {"master": MASTER, "a": A, "b": B}
    return FakeRegistry(hosts, {names[k]: v for k, v in scripts.items()})


def run(registry: FakeRegistry, *, timeout: float = 3600) -> tuple[PoolResult, list[str]]:
    lines: list[str] = []
    plan = plan_pool(registry, V, MASTER, [A, B])
    pace = Pace(timeout, 10, lambda: registry.now, registry.sleep, lines.append)
    result = rolling_upgrade(registry, plan, pace)
    return result, lines


# -- validation ---------------------------------------------------------------------


def test_plan_puts_the_master_first_and_normalises() -> None:
    registry = pool()
    plan = plan_pool(registry, V, "52-54-00-00-00-01", ["52:54:00:00:00:03", A])
    assert plan == PoolPlan(V, (MASTER, B, A))


def test_plan_lists_every_problem_before_anything_is_assigned() -> None:
    registry = pool()
    registry.hosts[B] = running(B, credential=None)
    with pytest.raises(InputError) as caught:
        plan_pool(registry, "0.9.0", MASTER, [A, "52:54:00:00:00:01", B, "52:54:00:00:00:09", "x"])
    assert caught.value.problems == (
        "version 0.9.0 is not registered; see `netinstall server repo list`",
        "52:54:00:00:00:01 is given twice (already as the master)",
        "host 52:54:00:00:00:03 has never reported running, so it has no agent to upgrade it",
        "no host 52:54:00:00:00:09 in the registry",
        "'x' is not a MAC address; expected e.g. 52:54:00:12:34:56",
    )
    assert registry.assigned == {}


def test_a_member_given_twice_is_refused() -> None:
    with pytest.raises(InputError, match=r"52:54:00:00:00:02 is given twice \(already as a member"):
        plan_pool(pool(), V, MASTER, [A, A])


# -- sequencing ---------------------------------------------------------------------


def test_all_hosts_upgrade_one_after_the_other_master_first() -> None:
    registry = pool()
    result, lines = run(registry)
    assert result.ok
    assert result.done == (MASTER, A, B)
    # Each starts only after the previous one ran the new version (400 s each, polled by 10 s).
    assert registry.assigned == {MASTER: 0.0, A: 400.0, B: 800.0}
    assert all(h.running_version == V and h.work is None for h in registry.hosts.values())
    master = [line for line in lines if line.startswith(MASTER)]
    assert master == [
        f"{MASTER} (master): upgrade to {V} assigned",
        f"{MASTER}: pending after 0 s",
        f"{MASTER}: signalled after 10 s",
        f"{MASTER}: installing after 20 s",
        f"{MASTER}: installed after 300 s",
        f"{MASTER}: running after 400 s",
        f"{MASTER} (master): runs {V}",
    ]


def test_the_first_failure_stops_the_run_and_names_what_was_not_started() -> None:
    registry = pool(a=FAILS)
    result, lines = run(registry)
    assert not result.ok
    assert (result.done, result.stopped_at, result.not_started) == ((MASTER,), A, (B,))
    assert result.reason == "it failed; last state failed, last message: sha256 mismatch"
    assert B not in registry.assigned
    assert lines[-1] == f"{A}: failed after 60 s"


def test_a_host_that_never_comes_back_times_out() -> None:
    registry = pool(master=STUCK)
    result, _ = run(registry, timeout=120)
    assert (result.stopped_at, result.not_started) == (MASTER, (A, B))
    assert result.reason == "it timed out after 120 s; last state signalled, last message: none"
    assert list(registry.assigned) == [MASTER]


def test_running_another_version_is_a_failure() -> None:
    registry = pool()
    registry.runs[MASTER] = "0.1.0"  # the installed system still reports the old version
    result, _ = run(registry)
    assert result.stopped_at == MASTER
    assert (result.reason or "").startswith("it reported running version 0.1.0, not 0.2.0")


def test_hosts_already_running_the_version_are_skipped() -> None:
    registry = pool()
    registry.hosts[MASTER] = running(MASTER, V)
    result, lines = run(registry)
    assert result.done == (MASTER, A, B)
    assert MASTER not in registry.assigned
    assert lines[0] == f"{MASTER} (master): already runs {V}; skipped"


def test_work_changed_by_someone_else_stops_the_run() -> None:
    registry = pool(master=STUCK)
    original = registry.sleep

    def sleep(seconds: float) -> None:
        original(seconds)
        registry.hosts[MASTER] = replace(registry.hosts[MASTER], work=Work.RESTORE)

    pace = Pace(3600, 10, lambda: registry.now, sleep, lambda line: None)
    result = rolling_upgrade(registry, plan_pool(registry, V, MASTER, [A]), pace)
    assert result.stopped_at == MASTER
    assert (result.reason or "").startswith("its work was changed meanwhile (now restore)")
