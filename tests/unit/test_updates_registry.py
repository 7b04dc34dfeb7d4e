"""Updates in the registry: the update key, update rows, what check-ins move, the precheck
and the apply job (a fake clock, the hosts' agents played by the test). On SQLite here,
on PostgreSQL by tests/integration/test_updates_registry_postgresql.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from common.errors import InputError
from common.protocol.messages import (
    HostUpdateState,
    JobHostState,
    JobState,
    RebootPolicy,
    State,
    UpdateApplyRequest,
    UpdateOutcome,
    UpdateResult,
    UpdateTargets,
)
from common.update_bundle import Member, UpdateMeta, read_bundle
from hypervisor_payload.updates import build_update
from pxe_server import update_ops
from pxe_server.job_runner import JobRunner
from pxe_server.jobs import Conflict
from pxe_server.registry import Registry, default_profile
from pxe_server.store.tables import secrets
from pxe_server.update_key import SECRET_NAME, verify_signature
from pxe_server.updates import Report, UnknownUpdate
from tests.registry_engines import execute

OLD = "0.1.0"
MASTER, A, B = (f"52:54:00:00:21:0{i}" for i in range(1, 4))
NOW = 1_000_000.0


def meta(update_id: str = "fix-1", *, reboot: bool = False) -> UpdateMeta:
    member = Member("root.tar", "tar", 10240, "a" * 64)
    return UpdateMeta(update_id, "a fix", "1.0-fix", (OLD,), reboot, (member,))


def add(reg: Registry, update_id: str = "fix-1", *, reboot: bool = False) -> None:
    reg.add_update(
        meta(update_id, reboot=reboot),
        metadata_sha256=update_id.ljust(64, "0"),
        size=20480,
        sha256="b" * 64,
        added_by="alice",
    )


def report(
    *ids: str, boot: str = "boot-1", result: UpdateResult | None = None, free: int = 4096
) -> Report:
    return Report(tuple(ids), boot, free, result)


@pytest.fixture
def reg(registry_dir: Path) -> Iterator[Registry]:
    with Registry.open(registry_dir) as registry:
        registry.add_profile(default_profile())
        for mac in (MASTER, A, B):
            registry.add_host(mac)
            registry.record_event(mac, State.INSTALLED)
            registry.record_event(mac, State.RUNNING, facts={"payload_version": OLD})
            registry.check_in(mac, OLD, "running")
        yield registry


def state(reg: Registry, mac: str, update_id: str = "fix-1") -> HostUpdateState | None:
    found = [r for r in reg.host_updates_of(mac) if r.update_id == update_id]
    return found[0].state if found else None


def test_the_update_key_is_made_once_sealed_and_kept(registry_dir: Path) -> None:
    with Registry.open(registry_dir) as registry:
        key = registry.update_key
        signature = key.sign(b"update.json")
    with Registry.open(registry_dir) as registry:
        assert registry.update_key.public_line() == key.public_line()
        assert verify_signature(registry.update_key.public_line(), signature, b"update.json")
    ((stored,),) = execute(
        registry_dir, select(secrets.c.value).where(secrets.c.name == SECRET_NAME)
    )
    assert key.raw().hex() not in stored[0]  # sealed, not in clear


def test_an_update_is_recorded_once_and_never_changes(reg: Registry) -> None:
    add(reg)
    add(reg)  # the same again: kept
    assert [u.id for u in reg.updates()] == ["fix-1"]
    with pytest.raises(Conflict, match="exists already with other content"):
        reg.add_update(meta(), metadata_sha256="c" * 64, size=1, sha256="d" * 64, added_by="bob")
    with pytest.raises(UnknownUpdate):
        reg.known_update("nope")


def test_a_given_update_is_pending_until_the_host_lists_it(reg: Registry) -> None:
    add(reg)
    reg.give_update(MASTER, "fix-1", RebootPolicy.AUTO)
    assert reg.update_checkin(MASTER, report()) is not None  # offered
    assert state(reg, MASTER) is HostUpdateState.PENDING
    assert reg.update_checkin(MASTER, report("fix-1")) is None
    assert state(reg, MASTER) is HostUpdateState.APPLIED
    with pytest.raises(Conflict, match="has update fix-1 applied already"):
        reg.give_update(MASTER, "fix-1", RebootPolicy.AUTO)
    reg.update_checkin(MASTER, report())  # reinstalled: its disk has it not
    assert state(reg, MASTER) is None


def test_a_failure_is_kept_with_its_reason_and_may_be_given_again(reg: Registry) -> None:
    add(reg)
    reg.give_update(A, "fix-1", RebootPolicy.AUTO)
    failed = UpdateResult("fix-1", UpdateOutcome.FAILED, "dpkg said no")
    assert reg.update_checkin(A, report(result=failed)) is None
    (row,) = reg.host_updates_of(A)
    assert (row.state, row.reason) == (HostUpdateState.FAILED, "dpkg said no")
    reg.give_update(A, "fix-1", RebootPolicy.AUTO)
    assert state(reg, A) is HostUpdateState.PENDING


def test_a_reboot_update_is_applied_once_the_host_checks_in_from_a_new_boot(
    reg: Registry,
) -> None:
    add(reg, "fix-2", reboot=True)
    reg.give_update(A, "fix-2", RebootPolicy.AUTO)
    reg.give_update(B, "fix-2", RebootPolicy.MANUAL)
    applied = UpdateResult("fix-2", UpdateOutcome.APPLIED)
    manual = UpdateResult("fix-2", UpdateOutcome.REBOOT_REQUIRED)
    reg.update_checkin(A, report("fix-2", result=applied))
    reg.update_checkin(B, report("fix-2", result=manual))
    assert state(reg, A, "fix-2") is HostUpdateState.REBOOTING
    assert state(reg, B, "fix-2") is HostUpdateState.REBOOT_REQUIRED
    reg.update_checkin(A, report("fix-2"))  # the same boot: still waiting
    assert state(reg, A, "fix-2") is HostUpdateState.REBOOTING
    reg.update_checkin(A, report("fix-2", boot="boot-2"))
    reg.update_checkin(B, report("fix-2", boot="boot-2"))
    assert state(reg, A, "fix-2") is HostUpdateState.APPLIED
    assert state(reg, B, "fix-2") is HostUpdateState.APPLIED


def test_what_the_host_reports_from_its_disk_is_the_truth(reg: Registry) -> None:
    add(reg)
    reg.update_checkin(B, report("fix-1", "unknown-to-us"))
    assert state(reg, B) is HostUpdateState.APPLIED
    facts = reg.update_facts(B)
    assert facts is not None
    assert facts.updates == ("fix-1", "unknown-to-us")
    assert facts.free_mib == 4096


def test_an_agent_from_before_updates_changes_nothing(reg: Registry) -> None:
    add(reg)
    reg.give_update(A, "fix-1", RebootPolicy.AUTO)
    assert reg.update_checkin(A, Report(None, None, None, None)) is not None
    assert state(reg, A) is HostUpdateState.PENDING
    assert reg.update_facts(A) is None


def test_the_precheck_names_every_problem(reg: Registry) -> None:
    add(reg)
    reg.update_checkin(MASTER, report())
    reg.update_checkin(A, report(free=0))
    reg.check_in(B, "0.9.0", "running")
    reg.update_checkin(B, report())
    targets = UpdateTargets(hosts=(MASTER, A, B))
    seen = reg.get_host(MASTER).last_checkin or 0  # type: ignore[union-attr]
    found = update_ops.precheck(reg, "fix-1", targets, seen + 4 * 3600)
    assert not found.ok
    assert found.hosts[0].problems == ("its agent has not checked in for 3 hours",)
    found = update_ops.precheck(reg, "fix-1", targets, seen)
    problems = {h.mac: h.problems for h in found.hosts}
    assert problems[MASTER] == ()
    assert problems[A] == ("0 MiB free in dom0; the update needs 1",)
    assert problems[B] == ("it runs 0.9.0; the update applies to 0.1.0",)
    reg.give_update(MASTER, "fix-1", RebootPolicy.AUTO)
    add(reg, "fix-2")
    found = update_ops.precheck(reg, "fix-2", UpdateTargets(hosts=(MASTER,)), seen)
    assert found.hosts[0].problems == ("update fix-1 is under way on it",)
    with pytest.raises(InputError, match="give a pool or hosts, not both"):
        update_ops.precheck(reg, "fix-1", UpdateTargets(pool="p", hosts=(A,)), seen)


@dataclass
class Agents:
    """A fake clock; each host given the update reports it applied a moment later (or
    failed, for a MAC in ``failing``), in the order the job gave it."""

    registry: Registry
    now: float = NOW
    failing: set[str] = field(default_factory=set)
    given: list[str] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        for mac in (MASTER, A, B):
            have = [r.update_id for r in self.registry.host_updates_of(mac)
                    if r.state is HostUpdateState.APPLIED]  # fmt: skip
            offered = self.registry.update_checkin(mac, report(*have))
            if offered is None:
                continue
            self.given.append(mac)
            if mac in self.failing:
                failed = UpdateResult(offered.update_id, UpdateOutcome.FAILED, "no space")
                self.registry.update_checkin(mac, report(*have, result=failed))
            else:
                self.registry.update_checkin(mac, report(*have, offered.update_id))
        return False


def apply(reg: Registry, agents: Agents) -> int:
    for mac in (MASTER, A, B):
        reg.update_checkin(mac, report())
    now = reg.get_host(MASTER).last_checkin or 0  # type: ignore[union-attr]
    request = UpdateApplyRequest(update="fix-1", hosts=(MASTER, A, B), poll=1.0, timeout=60.0)
    job = update_ops.start_update_apply(reg, request, "alice", now)
    JobRunner(reg, "server-1", clock=agents.clock, wait=agents.wait).run_once()
    return job.id


def test_the_job_gives_the_update_master_first_one_host_at_a_time(reg: Registry) -> None:
    add(reg)
    agents = Agents(reg)
    job = reg.job(apply(reg, agents))
    assert job is not None
    assert job.state is JobState.DONE
    assert agents.given == [MASTER, A, B]
    assert [h.state for h in job.hosts] == [JobHostState.DONE] * 3
    assert job.parameters["reboot"] == "auto"


def test_the_job_stops_at_the_first_failure(reg: Registry) -> None:
    add(reg)
    agents = Agents(reg, failing={A})
    job = reg.job(apply(reg, agents))
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.reason == (
        f"stopped at {A}: it failed: no space; updated: {MASTER}; not started: {B}"
    )
    assert agents.given == [MASTER, A]
    assert state(reg, B) is None


def test_apply_refuses_hosts_that_fail_the_precheck(reg: Registry) -> None:
    add(reg)
    request = UpdateApplyRequest(update="fix-1", hosts=(MASTER,))
    with pytest.raises(InputError) as refused:
        update_ops.start_update_apply(reg, request, "alice", NOW + 100_000)
    assert refused.value.problems[-1].startswith("the precheck failed: nothing was applied")
    assert reg.jobs() == []
    assert json.dumps([u.id for u in reg.updates()]) == '["fix-1"]'


def test_a_routine_check_in_writes_nothing(reg: Registry) -> None:
    add(reg)
    assert reg.update_offer(A, Report(None, None, None, None)) == (None, False)  # an old agent
    assert reg.update_offer(A, report()) == (None, True)  # its first facts
    reg.update_checkin(A, report())
    assert reg.update_offer(A, report()) == (None, False)
    assert reg.update_offer(A, report(free=4096 - 63)) == (None, False)  # within the slack
    assert reg.update_offer(A, report(free=4096 - 64)) == (None, True)
    assert reg.update_offer(A, report(boot="boot-2")) == (None, True)
    assert reg.update_offer(A, report("fix-1")) == (None, True)  # found on its disk
    reg.give_update(A, "fix-1", RebootPolicy.AUTO)
    offer, changed = reg.update_offer(A, report())
    assert offer is not None
    assert (offer.update_id, changed) == ("fix-1", False)  # offered again: nothing to write


def test_a_bundle_is_kept_signed_and_another_with_its_id_is_refused(
    reg: Registry, tmp_path: Path
) -> None:
    example = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "updates_example"
    _meta, built = build_update(example, tmp_path / "example.update")
    shared = tmp_path / "shared"
    record = update_ops.add_bundle(reg, shared, built, "alice")
    kept = shared / "updates" / "example-hotfix-1.update"
    bundle = read_bundle(kept)
    assert bundle.signature is not None
    assert verify_signature(
        reg.update_key.public_line(), bundle.signature.decode(), bundle.metadata
    )
    assert (record.id, record.added_by, record.size) == (
        "example-hotfix-1",
        "alice",
        kept.stat().st_size,
    )
    other = tmp_path / "other"
    shutil.copytree(example, other)
    toml = (other / "update.toml").read_text().replace("1.0-hotfix1", "1.0-hotfix2")
    (other / "update.toml").write_text(toml)
    _meta, changed = build_update(other, tmp_path / "other.update")
    before = kept.read_bytes()
    with pytest.raises(Conflict, match="exists already with other content"):
        update_ops.add_bundle(reg, shared, changed, "bob")
    assert kept.read_bytes() == before
    update_ops.clean(reg, shared, "example-hotfix-1")
    assert not kept.exists()
    assert reg.known_update("example-hotfix-1").cleaned is not None


def test_a_hosts_updates_read_again_and_again_compiles_nothing_new(reg: Registry) -> None:
    """A check-in reads its host's updates: once compiled, never again, nothing kept."""
    store = reg._store  # its compiled statements
    reg.host_updates_of("52:54:00:00:00:01")
    kept = len(store._compiled)
    for n in range(2, 50):
        reg.host_updates_of(f"52:54:00:00:00:{n:02x}")
        reg.update_hosts(f"update-{n}")
    assert len(store._compiled) <= kept + 1


def test_the_store_keeps_a_bounded_number_of_compiled_statements(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import literal, select

    from pxe_server.store import engine

    store = reg._store  # its compiled statements
    monkeypatch.setattr(engine, "MAX_COMPILED", len(store._compiled) + 2)
    with store.engine.connect() as conn:
        answers = [store.rows(conn, select(literal(n)))[0][0] for n in range(5)]
    assert answers == [0, 1, 2, 3, 4]  # past the bound, run through SQLAlchemy: same rows
    assert len(store._compiled) == engine.MAX_COMPILED
