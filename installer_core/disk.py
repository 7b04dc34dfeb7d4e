"""The disk steps (SPEC §6, §7): partition, make filesystems, mount, unmount, keep the log.

The table written is the one the plan holds (``InstallPlan.disk``, made by
partitioning's planner before anything was downloaded); the write refuses a disk
whose table changed since it was read for the plan. Partitioning is for fresh
installs: an upgrade or a restore keeps its table (``installer_core.existing``).
A payload too big for RAM is staged on a partition (``mount_staging``), removed
again when the target is unmounted, also after a failure.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from answerfile.model import Disk, DiskKind
from common.errors import CommandError, InputError, NetinstallError
from common.process import CommandRunner, run
from installer_core.mounts import mount, unmount_all
from installer_core.plan import DiskPlan, Staging, StagingPlace
from partitioning import apply, mkfs
from partitioning.model import Filesystem, Plan, Use

log = logging.getLogger(__name__)

LOG_NAME = "netinstall/install.log"


def device_of(disk: Disk, element: str) -> Path:
    """A local disk's device node, or an ``InputError`` naming ``element`` and why not.

    iSCSI disks are attached by ``installer_core.iscsi`` for a fresh install
    (``primary_disk``); an upgrade or restore of a SAN installation is refused here.
    """
    if disk.kind is not DiskKind.LOCAL or disk.path is None:
        raise InputError(
            f"{element} {disk.spec!r}: upgrading or restoring an installation on an iSCSI "
            "disk is not supported yet; nothing was written"
        )
    path = Path(os.path.realpath(disk.path))  # /dev/disk/by-id/... -> /dev/sdX
    if not path.is_block_device():
        raise InputError(f"{element} {disk.spec!r}: {disk.path} is not a disk on this host")
    return path


def partition_map(plan: Plan, disk: Path, *, kept: bool = False) -> dict[Use, Path]:
    """use -> device node for every partition the plan makes (with ``kept``: every one)."""
    return {
        p.use: Path(mkfs.partition_device(str(disk), p.number))
        for p in plan.partitions
        if kept or not p.keep
    }


def partition(disk: DiskPlan, runner: CommandRunner = run) -> None:
    """Step: write the planned table (refused when the disk changed since it was read)."""
    table = disk.table
    for note in table.notes:
        log.info("partition plan: %s", note)
    log.info("writing a %s table (%s layout) to %s", table.label, table.layout, disk.device)
    apply.apply_plan(table, disk.device, facts_before=disk.facts)
    settle(runner)
    mkfs.ensure_nodes(str(disk.device), [p.number for p in table.partitions if not p.keep])
    log.info("partitions: %s", ", ".join(f"{u} {d}" for u, d in disk.partitions.items()))


def settle(runner: CommandRunner) -> None:
    """Let udev (when it runs) create the new partitions' nodes and links."""
    if shutil.which("udevadm") is None:
        return
    try:
        runner(["udevadm", "settle", "--timeout=30"], timeout=60)
    except CommandError as exc:
        log.info("udevadm settle: %s (no udev here; partprobe is enough)", exc)


def blkid_value(runner: CommandRunner, device: Path, tag: str) -> str:
    """One tag (UUID, PARTUUID) of ``device``, read without blkid's cache."""
    done = runner(["blkid", "-c", "/dev/null", "-s", tag, "-o", "value", str(device)], timeout=60)
    value = done.stdout.strip()
    if not value:
        raise NetinstallError(f"blkid found no {tag} on {device}")
    return value


@dataclass(frozen=True)
class Filesystems:
    """What the filesystems were made with: the fstab and boot loader name them by UUID."""

    uuids: Mapping[Use, str]  # use -> filesystem UUID
    sr_partuuid: str | None = None  # the SR partition's PARTUUID (first boot finds it by it)


def make_filesystems(disk: DiskPlan, runner: CommandRunner = run) -> Filesystems:
    """Step: mkfs per plan, then each filesystem's UUID and the SR partition's PARTUUID."""
    for line in mkfs.make_filesystems(disk.table, disk.device):
        log.info("made %s", line)
    uuids: dict[Use, str] = {}
    sr_partuuid = None
    for part in disk.table.partitions:
        device = disk.partitions.get(part.use)
        if part.keep or device is None:
            continue
        if part.filesystem is not Filesystem.NONE:
            uuids[part.use] = blkid_value(runner, device, "UUID")
        if part.use is Use.SR:
            sr_partuuid = blkid_value(runner, device, "PARTUUID")
    log.info("filesystem UUIDs: %s", ", ".join(f"{k} {v}" for k, v in uuids.items()))
    return Filesystems(uuids, sr_partuuid)


def mount_target(target: Path, disk: DiskPlan, runner: CommandRunner = run) -> None:
    """Step: root at ``target``, then logs at var/log and the ESP at boot/efi inside it."""
    parts = disk.partitions
    mount(runner, disk.partition(Use.ROOT), target, fstype="ext4")
    if Use.LOGS in parts:
        mount(runner, parts[Use.LOGS], target / "var/log", fstype="ext4")
    if Use.ESP in parts:
        mount(runner, parts[Use.ESP], target / "boot/efi", fstype="vfat")


def unmount_target(target: Path, staging: Staging | None, runner: CommandRunner = run) -> None:
    """Step: sync, then unmount everything under the target, deepest first. Safe to repeat.

    A payload staged on a partition is removed and that partition unmounted.
    """
    if staging is not None and staging.mount is not None:
        if staging.directory.is_relative_to(staging.mount) and staging.directory.exists():
            shutil.rmtree(staging.directory, ignore_errors=True)
            log.info("the payload staged on the disk is removed")
        unmount_all(runner, staging.mount)
    runner(["sync"], timeout=600)
    for point in unmount_all(runner, target):
        log.info("unmounted %s", point)


def mount_staging(staging: Staging, total: int, runner: CommandRunner = run) -> None:
    """Mount the partition the plan stages the payload on and check it has room
    (SPEC §7: the new backup partition on a fresh install, the logs partition on an
    upgrade, where the payload gets a directory of its own beside the logs)."""
    if staging.device is None or staging.mount is None:
        raise NetinstallError(f"staging on {staging.place} names no partition")
    mount(runner, staging.device, staging.mount, fstype="ext4")
    shutil.rmtree(staging.directory, ignore_errors=True)  # a failed run's leftovers
    stat = os.statvfs(staging.mount)
    free = stat.f_bavail * stat.f_frsize
    if free < total:
        raise NetinstallError(
            f"the payload needs {total >> 20} MiB; {staging.place} {staging.device} has "
            f"{free >> 20} MiB free"
        )
    use = "backup" if staging.place is StagingPlace.BACKUP else "logs"
    log.info(
        "staging the payload on the %s partition %s (%s)", use, staging.device, staging.directory
    )


def write_install_log(
    log_file: Path, disk: DiskPlan, work: Path, runner: CommandRunner = run
) -> None:
    """Step: copy the install log to the logs partition (root's /var/log where there is none)."""
    if not log_file.is_file():
        log.warning("no install log at %s to keep", log_file)
        return
    if Use.LOGS in disk.partitions:
        device, inside = disk.partitions[Use.LOGS], Path(LOG_NAME)
    else:
        device, inside = disk.partition(Use.ROOT), Path("var/log") / LOG_NAME
    where = work / "logs-mount"
    mount(runner, device, where, fstype="ext4")
    try:
        copy_log(log_file, where / inside)
    finally:
        runner(["sync"], timeout=600)
        unmount_all(runner, where)
    log.info("install log written to %s:/%s", device, inside)


def copy_log(log_file: Path, destination: Path) -> None:
    """The log as it is now, readable by root only."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(log_file, destination)
    destination.chmod(0o600)
