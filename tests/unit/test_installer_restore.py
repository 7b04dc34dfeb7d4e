"""Restores (SPEC §7): the steps, finding the backup and its marker, copying it back onto
a root re-created with its UUID, and first boot re-armed for the restored version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from answerfile.bootargs import parse_cmdline
from answerfile.model import AnswerFile, Disk, Mode
from common.errors import InputError
from common.firmware import Firmware
from installer_core import backup, carry, existing, fetch, install, planning
from installer_core.network import Nic
from installer_core.plan import InstallPlan
from tests.unit.test_installer_fakes import INSTALL_KEY, make_plan
from tests.unit.test_installer_upgrade import (
    CMDLINE,
    OLD_FIRSTBOOT,
    ROOT_UUID,
    SR_UUID,
    blkid,
    old_system,
    probe,
    runner,
    written,
)

RESTORE = AnswerFile(mode=Mode.RESTORE, backup_disk=Disk("sda"))


def backup_partition(tmp_path: Path, marker: dict[str, str] | None = None) -> Path:
    """The backup partition's contents (what its fake mount shows): 0.1.0 and its marker."""
    top = old_system(tmp_path / "work/backup")
    if marker is not None:
        (top / existing.MARKER).write_text(json.dumps(marker))
    return top


def _find(tmp_path: Path, fake: object) -> existing.Found:
    return existing.find_backup(Disk("sda"), Firmware.BIOS, tmp_path / "work", probe(fake))  # type: ignore[arg-type]


def restore_plan(tmp_path: Path) -> InstallPlan:
    """A restore planned after its backup was found, fetched through the BOOTIF NIC."""
    backup_partition(tmp_path, MARKER)
    found = _find(tmp_path, runner())
    disk = planning.DiskFound(found.device, found.facts, None, found.table, found.existing)
    eth0 = Nic("eth0", "52:54:00:12:34:56")
    network = planning.NetworkFound(fetched_by=eth0, nics=(eth0,))
    return make_plan(tmp_path, RESTORE, args=CMDLINE, disk=disk, network=network)


MARKER = {
    "version": "0.1.0",
    "build": "b1",
    "date": "2024-05-01T12:00:00+00:00",
    "source_partition": "/dev/sda1",
    "source_uuid": ROOT_UUID,
}


def test_a_restore_has_no_download_and_reinstalls_the_boot_loader(tmp_path: Path) -> None:
    plan = restore_plan(tmp_path)
    names = [name for name, _ in install.steps_of(parse_cmdline("install"), plan)]
    assert names == [
        "network",
        "fetch-answerfile",
        "validate-answerfile",
        "plan",
        "make-root",
        "restore-root",
        "mount-target",
        "rearm-first-boot",
        "bootloader",
        "unmount",
        "write-install-log",
    ]
    assert (plan.fetch, plan.staging) == (None, None)


def test_a_restore_answer_file_needs_no_source() -> None:
    answer = fetch.validate_answerfile("<restore><backup-disk>sdb</backup-disk></restore>")
    assert answer.mode is Mode.RESTORE
    assert answer.sources == ()
    assert planning.disk_element(answer) == (Disk("sdb"), "the backup disk")


def test_find_backup_reads_the_marker_and_the_backups_first_boot(tmp_path: Path) -> None:
    backup_partition(tmp_path, MARKER)
    fake = runner()
    found = _find(tmp_path, fake).existing
    assert (found.version, found.build) == ("0.1.0", "b1")
    assert found.root_uuid == ROOT_UUID
    assert found.firstboot == OLD_FIRSTBOOT
    assert found.sr_uuid == SR_UUID
    assert ["mount", "-t", "ext4", "-o", "ro", "/dev/sda2", str(tmp_path / "work/backup")] in (
        fake.calls
    )
    assert written(fake) == []


def test_a_root_without_a_filesystem_takes_the_uuid_the_marker_names(tmp_path: Path) -> None:
    backup_partition(tmp_path, MARKER)
    assert _find(tmp_path, runner(blkid=blkid(uuid=2))).existing.root_uuid == ROOT_UUID


def test_a_backup_partition_without_a_marker_is_refused(tmp_path: Path) -> None:
    backup_partition(tmp_path, marker=None)
    fake = runner()
    with pytest.raises(
        InputError, match=r"^the backup partition /dev/sda2 holds no netinstall backup"
    ):
        _find(tmp_path, fake)
    assert written(fake) == []


def test_an_empty_backup_partition_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="/dev/sda2 holds no netinstall backup: it cannot be"):
        _find(tmp_path, runner(mount=32))


def test_restore_root_copies_the_backup_without_its_marker(tmp_path: Path) -> None:
    plan = restore_plan(tmp_path)
    assert plan.existing is not None
    work = tmp_path / "work"
    fake = runner()
    backup.make_root(plan.disk, plan.existing, upgrade=False, runner=fake)
    backup.restore_root(plan.disk, plan.existing, work, fake)
    new_root = work / "new-root"
    assert written(fake) == [
        ["mkfs.ext4", "-F", "-q", "-L", "root", "-U", ROOT_UUID, "/dev/sda1"],
        ["cp", "--archive", "--one-file-system", f"{work / 'backup'}/.", f"{new_root}/"],
    ]
    assert ["mount", "-t", "ext4", "-o", "ro", "/dev/sda2", str(work / "backup")] in (fake.calls)
    assert (new_root / existing.RELEASE).read_text().startswith("NAME=netinstall\nVERSION=")
    assert not (new_root / existing.MARKER).exists()
    assert not (new_root / "boot/netinstall-installer").exists()
    assert (work / "backup" / existing.MARKER).exists()  # the backup stays as it was


def test_the_restored_system_reports_running_again(tmp_path: Path) -> None:
    plan = restore_plan(tmp_path)
    target = plan.paths.target
    old_system(target)  # what restore-root put on root
    carry.restore_settings(plan)
    data = json.loads((target / existing.FIRSTBOOT).read_text())
    assert data == {
        "server": "http://10.0.2.2:8080",
        "mac": "52:54:00:12:34:56",
        "token": INSTALL_KEY,  # the enrolled key, never the token
        "payload_version": "0.1.0",
        "sr": OLD_FIRSTBOOT["sr"],
        "admin_interface": OLD_FIRSTBOOT["admin_interface"],
        "hostname": "xen-old",
    }
    state = json.loads((target / existing.STATE).read_text())
    assert state == {"sr_uuid": SR_UUID, "done": False}
    assert not (target / carry.AGENT_CONFIG).exists()
    assert not (target / carry.FIRSTBOOT_DONE).exists()
    assert (target / "etc/hostname").read_text() == "xen-old\n"  # its own settings
