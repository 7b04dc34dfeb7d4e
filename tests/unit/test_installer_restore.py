"""Restores (SPEC §7): the steps, finding the backup and its marker, copying it back onto
a root re-created with its UUID, and first boot re-armed for the restored version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from answerfile.model import AnswerFile, Disk, Mode
from common.errors import InputError
from installer_core import backup, carry, checks, existing, fetch, install
from installer_core.context import InstallContext
from tests.unit.test_installer_fakes import TOKEN, make_ctx
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


def restore_ctx(tmp_path: Path) -> InstallContext:
    ctx = make_ctx(tmp_path, CMDLINE)
    ctx.answer = AnswerFile(mode=Mode.RESTORE, backup_disk=Disk("sda"))
    return ctx


def backup_partition(ctx: InstallContext, marker: dict[str, str] | None = None) -> Path:
    """The backup partition's contents (what its fake mount shows): 0.1.0 and its marker."""
    top = old_system(ctx.work / "backup")
    if marker is not None:
        (top / existing.MARKER).write_text(json.dumps(marker))
    return top


MARKER = {
    "version": "0.1.0",
    "build": "b1",
    "date": "2024-05-01T12:00:00+00:00",
    "source_partition": "/dev/sda1",
    "source_uuid": ROOT_UUID,
}


def test_a_restore_has_no_download_and_reinstalls_the_boot_loader() -> None:
    names = [s.name for s in install.steps_for(Mode.RESTORE)]
    assert names == [
        "network",
        "fetch-answerfile",
        "validate-answerfile",
        "hardware-checks",
        "find-backup",
        "make-root",
        "restore-root",
        "mount-target",
        "rearm-first-boot",
        "bootloader",
        "unmount",
        "write-install-log",
    ]


def test_a_restore_answer_file_needs_no_source(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.answer_text = "<restore><backup-disk>sdb</backup-disk></restore>"
    fetch.validate_answerfile(ctx)
    assert ctx.answer is not None
    assert ctx.answer.mode is Mode.RESTORE
    assert ctx.repo_url is None
    assert checks.install_disk(ctx.answer) == (Disk("sdb"), "the backup disk")


def test_find_backup_reads_the_marker_and_the_backups_first_boot(tmp_path: Path) -> None:
    ctx = restore_ctx(tmp_path)
    backup_partition(ctx, MARKER)
    fake = runner()
    existing.find_backup(ctx, probe(fake))
    assert ctx.existing is not None
    assert (ctx.existing.version, ctx.existing.build) == ("0.1.0", "b1")
    assert ctx.existing.root_uuid == ROOT_UUID
    assert ctx.existing.firstboot == OLD_FIRSTBOOT
    assert ctx.existing.sr_uuid == SR_UUID
    assert ctx.payload_version == "0.1.0"
    assert ctx.uuids == {"root": ROOT_UUID}
    assert ["mount", "-t", "ext4", "-o", "ro", "/dev/sda2", str(ctx.work / "backup")] in (
        fake.calls
    )
    assert written(fake) == []


def test_a_root_without_a_filesystem_takes_the_uuid_the_marker_names(tmp_path: Path) -> None:
    ctx = restore_ctx(tmp_path)
    backup_partition(ctx, MARKER)
    existing.find_backup(ctx, probe(runner(blkid=blkid(uuid=2))))
    assert ctx.existing is not None
    assert ctx.existing.root_uuid == ROOT_UUID


def test_a_backup_partition_without_a_marker_is_refused(tmp_path: Path) -> None:
    ctx = restore_ctx(tmp_path)
    backup_partition(ctx, marker=None)
    fake = runner()
    with pytest.raises(
        InputError, match=r"^the backup partition /dev/sda2 holds no netinstall backup"
    ):
        existing.find_backup(ctx, probe(fake))
    assert written(fake) == []


def test_an_empty_backup_partition_is_refused(tmp_path: Path) -> None:
    ctx = restore_ctx(tmp_path)
    with pytest.raises(InputError, match="/dev/sda2 holds no netinstall backup: it cannot be"):
        existing.find_backup(ctx, probe(runner(mount=32)))


def test_restore_root_copies_the_backup_without_its_marker(tmp_path: Path) -> None:
    ctx = restore_ctx(tmp_path)
    backup_partition(ctx, MARKER)
    existing.find_backup(ctx, probe(runner()))
    fake = runner()
    backup.make_root(ctx, fake)
    backup.restore_root(ctx, fake)
    new_root = ctx.work / "new-root"
    assert written(fake) == [
        ["mkfs.ext4", "-F", "-q", "-L", "root", "-U", ROOT_UUID, "/dev/sda1"],
        ["cp", "--archive", "--one-file-system", f"{ctx.work / 'backup'}/.", f"{new_root}/"],
    ]
    assert ["mount", "-t", "ext4", "-o", "ro", "/dev/sda2", str(ctx.work / "backup")] in (
        fake.calls
    )
    assert (new_root / existing.RELEASE).read_text().startswith("NAME=netinstall\nVERSION=")
    assert not (new_root / existing.MARKER).exists()
    assert not (new_root / "boot/netinstall-installer").exists()
    assert (ctx.work / "backup" / existing.MARKER).exists()  # the backup stays as it was


def test_the_restored_system_reports_running_again(tmp_path: Path) -> None:
    ctx = restore_ctx(tmp_path)
    backup_partition(ctx, MARKER)
    existing.find_backup(ctx, probe(runner()))
    old_system(ctx.target)  # what restore-root put on root
    carry.restore_settings(ctx)
    data = json.loads((ctx.target / existing.FIRSTBOOT).read_text())
    assert data == {
        "server": "http://10.0.2.2:8080",
        "mac": "52:54:00:12:34:56",
        "token": TOKEN,
        "payload_version": "0.1.0",
        "sr": OLD_FIRSTBOOT["sr"],
        "admin_interface": OLD_FIRSTBOOT["admin_interface"],
        "hostname": "xen-old",
    }
    state = json.loads((ctx.target / existing.STATE).read_text())
    assert state == {"sr_uuid": SR_UUID, "done": False}
    assert not (ctx.target / carry.AGENT_CONFIG).exists()
    assert not (ctx.target / carry.FIRSTBOOT_DONE).exists()
    assert (ctx.target / "etc/hostname").read_text() == "xen-old\n"  # its own settings
