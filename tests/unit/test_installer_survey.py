"""installer_core.survey: what the plan step reads from the machine (the run's disk, the
host's memory, the NICs), and the plan it makes from them, before any download."""

from __future__ import annotations

from pathlib import Path

import pytest

from answerfile.bootargs import parse_cmdline
from answerfile.model import AnswerFile, Mode
from common.errors import InputError, NetinstallError, PlanError
from common.firmware import Firmware
from installer_core import survey
from installer_core.fetch import Transport
from installer_core.network import Nic
from installer_core.plan import Paths, StagingPlace
from partitioning.model import DiskFacts, GiB, Use
from tests.unit.test_installer_fakes import (
    MAC,
    REPO,
    FakeRunner,
    FakeSession,
    answer_for,
    file_server,
    transport,
)


def _machine(
    tmp_path: Path, disks: dict[str, int], xen: bool, xl: str | int = "", available_mib: int = 4096
) -> survey.Machine:
    sys_block = tmp_path / "block"
    for name, size in disks.items():
        (sys_block / name).mkdir(parents=True)
        (sys_block / name / "size").write_text(f"{size // 512}\n")
    caps = tmp_path / "capabilities"
    if xen:
        caps.write_text("control_d\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: 9999999 kB\nMemAvailable:   {available_mib * 1024} kB\n")
    net = tmp_path / "net"
    (net / "eth0").mkdir(parents=True)
    (net / "eth0/address").write_text(MAC + "\n")
    (net / "eth0/type").write_text("1\n")
    return survey.Machine(
        runner=FakeRunner({"xl": xl}),
        sys_block=sys_block,
        sys_net=net,
        xen_capabilities=caps,
        meminfo=meminfo,
        is_block=lambda path: path.name in disks,
        read_facts=lambda path, _vms: DiskFacts(size=disks[path.name]),
    )


def _repository() -> Transport:
    from tests.unit.test_installer_download import FILES, treeinfo_text

    files = {f"repo/{name}": b"x" * 100 for name in FILES}
    files["repo/.treeinfo"] = treeinfo_text().encode()
    return transport(FakeSession(file_server(files)))


def _plan(
    tmp_path: Path,
    machine: survey.Machine,
    answer: AnswerFile | None = None,
    io: Transport | None = None,
):  # type: ignore[no-untyped-def]
    return survey.plan_install(
        parse_cmdline("install"),
        Firmware.BIOS,
        answer or answer_for(),
        san=None,
        fetched_by=Nic("eth0", MAC),
        paths=Paths(work=tmp_path / "work", target=tmp_path / "target"),
        machine=machine,
        transport=io or _repository(),
    )


def test_a_big_enough_disk_and_memory_make_a_plan(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"sda": 60 * GiB}, xen=True, xl="total_memory : 4096\n")
    io = _repository()
    plan = _plan(tmp_path, machine, io=io)
    assert machine.runner.calls == [["xl", "info"]]  # type: ignore[attr-defined]
    assert plan.host_memory_mib == 4096
    assert plan.disk.device == Path("/dev/sda").resolve()
    assert plan.disk.partitions[Use.ROOT].name.endswith("1")
    assert plan.network.admin_name == "eth0"
    assert plan.staging is not None
    assert plan.staging.place is StagingPlace.RAM
    assert plan.fetch is not None
    assert plan.fetch.repository == REPO
    assert [f.size for f in plan.fetch.files] == [100] * 5
    assert [m for m, _u, _k in io.session.calls] == ["GET"] + ["HEAD"] * 5  # type: ignore[attr-defined]


def test_a_missing_disk_is_named_with_the_disks_found(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"vda": 50 * GiB}, xen=False)
    session = FakeSession(file_server({}))
    with pytest.raises(
        InputError, match=r"the primary disk /dev/sda is not a block device .*disks: vda"
    ):
        _plan(tmp_path, machine, io=transport(session))
    assert session.calls == []  # the repository was not asked


def test_a_small_disk_is_refused_before_the_repository_is_asked(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"sda": 8 * GiB}, xen=False)
    session = FakeSession(file_server({}))
    with pytest.raises(PlanError, match=r"/dev/sda has 8 GiB; netinstall needs at least 12 GiB"):
        _plan(tmp_path, machine, io=transport(session))
    assert session.calls == []


def test_too_little_host_memory_is_refused(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"sda": 60 * GiB}, xen=True, xl="total_memory : 1000\n")
    with pytest.raises(InputError, match=r"1000 MiB .* at least 1024 MiB"):
        _plan(tmp_path, machine)


def test_outside_xen_the_memory_check_is_skipped(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"sda": 60 * GiB}, xen=False)
    assert _plan(tmp_path, machine).host_memory_mib is None
    assert machine.runner.calls == []  # type: ignore[attr-defined]


def test_a_broken_xl_is_an_error(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"sda": 60 * GiB}, xen=True, xl=1)
    with pytest.raises(NetinstallError, match="cannot read the host's memory with xl info"):
        _plan(tmp_path, machine)


def test_no_primary_disk_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no <primary-disk>"):
        _plan(tmp_path, _machine(tmp_path, {}, xen=False), AnswerFile())


def test_too_little_ram_stages_on_the_new_backup_partition(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"sda": 60 * GiB}, xen=False, available_mib=200)
    plan = _plan(tmp_path, machine)
    assert plan.staging is not None
    assert plan.staging.place is StagingPlace.BACKUP
    assert plan.staging.device == plan.disk.partitions[Use.BACKUP]
    assert any("partitioned before the download" in note for note in plan.notes)


def test_an_upgrade_is_planned_from_the_installation_it_finds(tmp_path: Path) -> None:
    from tests.unit.test_installer_upgrade import old_system, probe, runner, table

    fake = runner()
    machine = _machine(tmp_path, {"sda": 60 * GiB}, xen=False)
    machine = survey.Machine(
        sys_block=machine.sys_block,
        sys_net=machine.sys_net,
        xen_capabilities=machine.xen_capabilities,
        meminfo=machine.meminfo,
        probe=probe(fake, table()),
    )
    old_system(tmp_path / "work/old-root")
    answer = AnswerFile(
        mode=Mode.UPGRADE,
        existing_installation=answer_for().primary_disk.disk,  # type: ignore[union-attr]
        sources=answer_for().sources,
    )
    plan = _plan(tmp_path, machine, answer)
    assert plan.mode is Mode.UPGRADE
    assert plan.existing is not None
    assert plan.existing.version == "0.1.0"
    assert all(p.keep for p in plan.disk.table.partitions)
