"""Jobs on PostgreSQL across servers: tests/unit/test_jobs.py's functions (collected here
on a fresh database), then two servers (two ``Registry`` objects, each with a job runner
of its own, real threads and clock) sharing one registry: a job claimed by one whose
server "dies" (hangs: its lease is never renewed) is taken over by the other and
finished, no host is assigned its upgrade twice, and the dead server, back, writes
nothing more. The hosts are played by a fake agent loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.protocol.messages import JobState, PoolUpgradeRequest, Work
from pxe_server.job_runner import JobRunner, start_pool_upgrade
from pxe_server.jobs import LeaseLost
from pxe_server.model import State
from pxe_server.registry import Registry, default_profile
from pxe_server.store.engine import database_url, record_url
from tests.integration.registry_postgresql import *  # noqa: F403
from tests.unit.test_jobs import *  # noqa: F403

pytestmark = pytest.mark.integration

HOSTS = [f"52:54:00:00:01:0{i}" for i in range(1, 5)]
LEASE, RENEW = 1.5, 0.3  # short, for the test: a dead server's job is taken in 1.5 s


@pytest.fixture
def servers(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Registry, Registry]]:
    record_url(tmp_path, database_url(postgres_url))
    with Registry.open(tmp_path) as first, Registry.open(tmp_path) as second:
        first.add_profile(default_profile())
        first.add_repository("0.2.0", "/srv/repo-0.2.0")
        for mac in HOSTS:
            first.add_host(mac)
            first.record_event(mac, State.INSTALLED)
            first.record_event(mac, State.RUNNING, facts={"payload_version": "0.1.0"})
        yield first, second


def play_agents(registry: Registry, stop: threading.Event, takes: float = 0.4) -> None:
    """Each host given the upgrade reports running 0.2.0 ``takes`` seconds later."""
    seen: dict[str, float] = {}
    while not stop.wait(0.05):
        for host in registry.list_hosts():
            if host.work is not Work.UPGRADE or host.state is not State.PENDING:
                continue
            began = seen.setdefault(host.mac, time.monotonic())
            if time.monotonic() - began >= takes:
                registry.record_event(host.mac, State.INSTALLED)
                registry.record_event(host.mac, State.RUNNING, facts={"payload_version": "0.2.0"})
                del seen[host.mac]


class Hang:
    """A runner's wait that, once ``die`` is set, hangs (the server froze or died: no
    renewal, no write) until ``revive`` is set, then says the runner goes on."""

    def __init__(self) -> None:
        self.die, self.revive, self.hung = threading.Event(), threading.Event(), threading.Event()

    def __call__(self, seconds: float) -> bool:
        if self.die.is_set():
            self.hung.set()
            self.revive.wait(60)
            return False
        time.sleep(seconds)
        return False


def assignments(registry: Registry, mac: str) -> int:
    return sum(1 for e in registry.events(mac) if (e.message or "").startswith("assigned: "))


def test_a_dead_server_s_job_is_taken_over_and_finished_once(
    servers: tuple[Registry, Registry],
) -> None:
    first, second = servers
    request = PoolUpgradeRequest("0.2.0", master=HOSTS[0], members=tuple(HOSTS[1:]), poll=0.05)
    job_id = start_pool_upgrade(first, request, "alice").id
    hang = Hang()
    one = JobRunner(first, "server-1", lease=LEASE, renew=RENEW, idle=0.05, wait=hang)
    two = JobRunner(second, "server-2", lease=LEASE, renew=RENEW, idle=0.05)
    stop = threading.Event()
    agents = threading.Thread(target=play_agents, args=(second, stop))
    agents.start()
    one.start()
    try:
        deadline = time.monotonic() + 30  # server-1 upgrades the master, then dies
        while first.get_host(HOSTS[0]).running_version != "0.2.0":  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        hang.die.set()
        assert hang.hung.wait(30)
        held = second.job(job_id)
        assert held is not None
        assert (held.state, held.lease_holder) == (JobState.RUNNING, "server-1")
        two.start()  # server-2 takes it once server-1's lease has run out
        deadline = time.monotonic() + 60
        while (job := second.job(job_id)) is not None and job.state is JobState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert job is not None
        assert job.state is JobState.DONE, job.reason
        assert job.lease_holder == "server-2"
        texts = [line.text for line in job.log]
        assert "started by server-1" in texts
        assert "taken over by server-2" in texts
        assert texts.index("taken over by server-2") > texts.index("started by server-1")
        assert [assignments(second, mac) for mac in HOSTS] == [1, 1, 1, 1]
        assert all(second.get_host(m).running_version == "0.2.0" for m in HOSTS)  # type: ignore[union-attr]
        # server-1 comes back: it finds it lost the lease and writes nothing more
        logged = len(job.log)
        hang.die.clear()
        hang.revive.set()
        one.stop()
        after = second.job(job_id)
        assert after is not None
        assert (after.state, len(after.log)) == (JobState.DONE, logged)
        with pytest.raises(LeaseLost):
            first.renew_job(job_id, "server-1", time.time(), LEASE)
    finally:
        hang.revive.set()
        stop.set()
        one.stop()
        two.stop()
        agents.join(timeout=30)


def test_two_servers_claim_one_job_once(servers: tuple[Registry, Registry]) -> None:
    """Both claim at the same moment, many times: each job is claimed by one of them."""
    first, second = servers
    for round_ in range(10):
        job_id = start_pool_upgrade(
            first, PoolUpgradeRequest("0.2.0", master=HOSTS[round_ % 4]), "alice"
        ).id
        claimed: list[tuple[str, int | None]] = []
        go = threading.Barrier(2)

        def claim(registry: Registry, name: str, claimed: list[tuple[str, int | None]] = claimed,
                  go: threading.Barrier = go) -> None:  # fmt: skip
            go.wait()
            job = registry.claim_job(name, time.time(), 30)
            claimed.append((name, None if job is None else job.id))

        threads = [
            threading.Thread(target=claim, args=(first, "server-1")),
            threading.Thread(target=claim, args=(second, "server-2")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(job for _, job in claimed if job is not None) == [job_id]
        winner = next(name for name, job in claimed if job == job_id)
        first.job_progress(job_id, winner, time.time(), end=(JobState.DONE, None))
