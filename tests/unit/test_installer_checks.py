"""installer_core.checks: the primary disk and the host's memory, before any download."""

from __future__ import annotations

from pathlib import Path

import pytest

from answerfile.model import AnswerFile, Disk, PrimaryDisk
from common.errors import InputError, NetinstallError
from installer_core.checks import MIN_HOST_MEMORY_MIB, Machine, check_hardware
from tests.unit.test_installer_fakes import FakeRunner, make_ctx

GiB = 2**30


def _machine(tmp_path: Path, disks: dict[str, int], xen: bool, xl: str | int = "") -> Machine:
    sys_block = tmp_path / "block"
    for name, size in disks.items():
        (sys_block / name).mkdir(parents=True)
        (sys_block / name / "size").write_text(f"{size // 512}\n")
    caps = tmp_path / "capabilities"
    if xen:
        caps.write_text("control_d\n")
    return Machine(
        runner=FakeRunner({"xl": xl}),
        sys_block=sys_block,
        xen_capabilities=caps,
        is_block=lambda path: path.name in disks,
    )


def _ctx(tmp_path: Path, disk: str = "sda"):  # type: ignore[no-untyped-def]
    ctx = make_ctx(tmp_path)
    ctx.answer = AnswerFile(primary_disk=PrimaryDisk(Disk(disk)))
    return ctx


def test_a_big_enough_disk_and_memory_pass(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"sda": 50 * GiB}, xen=True, xl="total_memory : 4096\n")
    check_hardware(_ctx(tmp_path), machine)
    assert machine.runner.calls == [["xl", "info"]]  # type: ignore[attr-defined]


def test_a_missing_disk_is_named_with_the_disks_found(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"vda": 50 * GiB}, xen=False)
    with pytest.raises(
        InputError, match=r"the primary disk /dev/sda is not a block device .*disks: vda"
    ):
        check_hardware(_ctx(tmp_path), machine)


def test_a_small_disk_is_refused(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"sda": 8 * GiB}, xen=False)
    with pytest.raises(InputError, match=r"/dev/sda has 8 GiB; netinstall needs at least 12 GiB"):
        check_hardware(_ctx(tmp_path), machine)


def test_too_little_host_memory_is_refused(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"sda": 50 * GiB}, xen=True, xl="total_memory : 1000\n")
    with pytest.raises(InputError, match=f"1000 MiB .* at least {MIN_HOST_MEMORY_MIB} MiB"):
        check_hardware(_ctx(tmp_path), machine)


def test_outside_xen_the_memory_check_is_skipped(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"sda": 50 * GiB}, xen=False)
    check_hardware(_ctx(tmp_path), machine)
    assert machine.runner.calls == []  # type: ignore[attr-defined]


def test_a_broken_xl_is_an_error(tmp_path: Path) -> None:
    machine = _machine(tmp_path, {"sda": 50 * GiB}, xen=True, xl=1)
    with pytest.raises(NetinstallError, match="cannot read the host's memory with xl info"):
        check_hardware(_ctx(tmp_path), machine)


def test_no_primary_disk_is_an_input_error(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.answer = AnswerFile()
    with pytest.raises(InputError, match="no <primary-disk>"):
        check_hardware(ctx, _machine(tmp_path, {}, xen=False))
