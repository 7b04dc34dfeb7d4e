"""The disk steps (SPEC §6, §7): partition, make filesystems, mount, unmount, keep the log.

Partitioning is for fresh installs: an upgrade or a restore keeps the table
(``installer_core.existing``). iSCSI disks are refused before anything is
written. Every refusal of the planner (disk too small, utility partitions that
cannot be kept) is a ``PlanError`` raised before the table is touched.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from answerfile.model import AnswerFile, Disk, DiskKind
from answerfile.model import Mode as AnswerMode
from common.errors import CommandError, InputError, NetinstallError
from common.firmware import Firmware
from installer_core import iscsi, multipath
from installer_core.context import InstallContext
from installer_core.mounts import DEFAULT_RUNNER, Runner, mount, unmount_all
from partitioning import apply, facts, mkfs, planner
from partitioning.model import Filesystem, Mode, Options, Plan, Preserve, Use

log = logging.getLogger(__name__)

LOG_NAME = "netinstall/install.log"
STAGING_DIR = "netinstall-staging"  # an upgrade's payload on the logs partition


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


def primary_disk(ctx: InstallContext) -> Path:
    """The primary disk's device node (an iSCSI LUN attached through the iBFT's storage
    NIC), or an ``InputError`` saying why it cannot be used."""
    answer = _answer(ctx)
    if answer.mode is not AnswerMode.FRESH:
        raise InputError(
            f"only a fresh install partitions the disk; mode {answer.mode.value} keeps "
            "its partition table; nothing was written"
        )
    if answer.primary_disk is None:
        raise InputError("a fresh install needs <primary-disk>; nothing was written")
    return fresh_device(ctx, answer.primary_disk.disk, "primary-disk")


def fresh_device(ctx: InstallContext, disk: Disk, element: str) -> Path:
    """The device a fresh install writes ``disk`` through: an iSCSI LUN attached over the
    iBFT's storage NIC, or the local disk; with device_mapper_multipath, the map of it."""
    if disk.kind is not DiskKind.LOCAL:
        device = iscsi.san_device(ctx, disk, element)
    else:
        device = device_of(disk, element)
    return multipath.disk_for(ctx, device, element)


def plan_options(ctx: InstallContext) -> Options:
    """The planner's options: firmware, boot parameters and the answer file."""
    answer = _answer(ctx)
    primary = answer.primary_disk
    return Options(
        firmware=Firmware(ctx.firmware.value),
        disable_gpt=ctx.args.disable_gpt,
        guest_storage=primary.guest_storage if primary else True,
        preserve_first_partition=Preserve(
            primary.preserve_first_partition.value if primary else Preserve.IF_UTILITY.value
        ),
        zap_utility_partitions=answer.zap_utility_partitions,
        mode=Mode.FRESH,
    )


def partition_map(plan: Plan, disk: Path) -> dict[str, Path]:
    """use -> device node for every partition the plan made (kept ones left out)."""
    return {
        p.use.value: Path(mkfs.partition_device(str(disk), p.number))
        for p in plan.partitions
        if not p.keep
    }


def partition(ctx: InstallContext, runner: Runner = DEFAULT_RUNNER) -> None:
    """Plan the primary disk (refusing before any write) and write the new table."""
    if ctx.disk_ready:
        log.info("the disk was partitioned before the download, to stage the payload on it")
        return
    disk = primary_disk(ctx)
    found = facts.read_facts(disk, sr_has_vms=False)
    plan = planner.plan(found, plan_options(ctx))
    for note in plan.notes:
        log.info("partition plan: %s", note)
    log.info("writing a %s table (%s layout) to %s", plan.label, plan.layout, disk)
    apply.apply_plan(plan, disk, facts_before=found)
    settle(runner)
    mkfs.ensure_nodes(str(disk), [p.number for p in plan.partitions if not p.keep])
    ctx.disk, ctx.plan = disk, plan
    ctx.partitions = partition_map(plan, disk)
    log.info("partitions: %s", ", ".join(f"{u} {d}" for u, d in ctx.partitions.items()))


def settle(runner: Runner) -> None:
    """Let udev (when it runs) create the new partitions' nodes and links."""
    if shutil.which("udevadm") is None:
        return
    try:
        runner(["udevadm", "settle", "--timeout=30"], timeout=60)
    except CommandError as exc:
        log.info("udevadm settle: %s (no udev here; partprobe is enough)", exc)


def blkid_value(runner: Runner, device: Path, tag: str) -> str:
    """One tag (UUID, PARTUUID) of ``device``, read without blkid's cache."""
    done = runner(["blkid", "-c", "/dev/null", "-s", tag, "-o", "value", str(device)], timeout=60)
    value = done.stdout.strip()
    if not value:
        raise NetinstallError(f"blkid found no {tag} on {device}")
    return value


def make_filesystems(ctx: InstallContext, runner: Runner = DEFAULT_RUNNER) -> None:
    """mkfs per plan, then read back each filesystem's UUID and the SR partition's PARTUUID."""
    if ctx.disk_ready:
        log.info("the filesystems were made before the download, to stage the payload")
        return
    plan, disk = _plan(ctx)
    for line in mkfs.make_filesystems(plan, disk):
        log.info("made %s", line)
    for part in plan.partitions:
        device = ctx.partitions.get(part.use.value)
        if part.keep or device is None:
            continue
        if part.filesystem is not Filesystem.NONE:
            ctx.uuids[part.use.value] = blkid_value(runner, device, "UUID")
        if part.use is Use.SR:
            ctx.partuuids[part.use.value] = blkid_value(runner, device, "PARTUUID")
    log.info("filesystem UUIDs: %s", ", ".join(f"{k} {v}" for k, v in ctx.uuids.items()))


def mount_target(ctx: InstallContext, runner: Runner = DEFAULT_RUNNER) -> None:
    """Root at ctx.target, then logs at var/log and the ESP at boot/efi inside it."""
    _plan(ctx)
    parts = ctx.partitions
    mount(runner, parts[Use.ROOT.value], ctx.target, fstype="ext4")
    if Use.LOGS.value in parts:
        mount(runner, parts[Use.LOGS.value], ctx.target / "var/log", fstype="ext4")
    if Use.ESP.value in parts:
        mount(runner, parts[Use.ESP.value], ctx.target / "boot/efi", fstype="vfat")


def unmount_target(ctx: InstallContext, runner: Runner = DEFAULT_RUNNER) -> None:
    """sync, then unmount everything under the target, deepest first. Safe to repeat.

    A payload staged on the backup partition is removed and that partition unmounted.
    """
    if ctx.staging_mount is not None:
        if ctx.staging is not None and ctx.staging.is_relative_to(ctx.staging_mount):
            shutil.rmtree(ctx.staging, ignore_errors=True)
        unmount_all(runner, ctx.staging_mount)
        log.info("the payload staged on the disk is removed")
        ctx.staging_mount = None
    runner(["sync"], timeout=600)
    for point in unmount_all(runner, ctx.target):
        log.info("unmounted %s", point)


def staging_on_disk(ctx: InstallContext, total: int, runner: Runner = DEFAULT_RUNNER) -> Path:
    """Partition and format now, mount the new backup partition, stage the payload there.

    SPEC §7's choice for a fresh install whose payload does not fit in RAM: the
    disk's old contents are gone before the payload has verified, which is said.
    An upgrade stages on the existing logs partition instead (``staging_on_logs``).
    """
    answer = _answer(ctx)
    if answer.mode is AnswerMode.UPGRADE:
        return staging_on_logs(ctx, total, runner)
    if answer.mode is not AnswerMode.FRESH:
        raise NetinstallError(
            f"the payload does not fit in RAM, and a {answer.mode.value} does not download one"
        )
    log.warning(
        "partitioning before the download: the disk's old contents are lost even if "
        "the payload then fails to verify"
    )
    partition(ctx, runner)
    make_filesystems(ctx, runner)
    ctx.disk_ready = True
    device = ctx.partitions.get(Use.BACKUP.value)
    if device is None:
        raise NetinstallError("the new layout has no backup partition to stage the payload on")
    where = _mount_staging(ctx, device, runner)
    _check_room(where, total, "backup", device)
    log.info("staging the payload on the backup partition %s", device)
    return where / "payload"


def _mount_staging(ctx: InstallContext, device: Path, runner: Runner) -> Path:
    where = ctx.work / "staging-disk"
    mount(runner, device, where, fstype="ext4")
    ctx.staging_mount = where
    return where


def _check_room(where: Path, total: int, use: str, device: Path) -> None:
    stat = os.statvfs(where)
    free = stat.f_bavail * stat.f_frsize
    if free < total:
        raise NetinstallError(
            f"the payload needs {total >> 20} MiB; the {use} partition {device} has "
            f"{free >> 20} MiB free"
        )


def staging_on_logs(ctx: InstallContext, total: int, runner: Runner = DEFAULT_RUNNER) -> Path:
    """An upgrade's payload on the installation's logs partition (SPEC §7), beside its logs.

    Nothing of the installation is overwritten: the payload goes to a directory of
    its own, removed again when the target is unmounted (also after a failure).
    """
    device = ctx.partitions.get(Use.LOGS.value)
    layout = ctx.plan.layout.value if ctx.plan else "existing"
    if device is None:
        raise NetinstallError(
            f"the payload needs {total >> 20} MiB, more than fits in RAM, and the {layout} "
            "layout has no logs partition to stage it on; give the machine more memory"
        )
    where = _mount_staging(ctx, device, runner)
    staging = ctx.staging = where / STAGING_DIR  # unmount_target removes it, even on failure
    shutil.rmtree(staging, ignore_errors=True)  # a failed run's leftovers
    _check_room(where, total, "logs", device)
    log.info("staging the payload on the logs partition %s (%s)", device, STAGING_DIR)
    return staging


def write_install_log(ctx: InstallContext, runner: Runner = DEFAULT_RUNNER) -> None:
    """Copy the install log to the logs partition (root's /var/log where there is none)."""
    if not ctx.log_file.is_file():
        log.warning("no install log at %s to keep", ctx.log_file)
        return
    if Use.LOGS.value in ctx.partitions:
        device, inside = ctx.partitions[Use.LOGS.value], Path(LOG_NAME)
    elif Use.ROOT.value in ctx.partitions:
        device, inside = ctx.partitions[Use.ROOT.value], Path("var/log") / LOG_NAME
    else:
        log.warning("no partitions were made: the install log stays in %s", ctx.log_file)
        return
    where = ctx.work / "logs-mount"
    mount(runner, device, where, fstype="ext4")
    try:
        copy_log(ctx.log_file, where / inside)
    finally:
        runner(["sync"], timeout=600)
        unmount_all(runner, where)
    log.info("install log written to %s:/%s", device, inside)


def copy_log(log_file: Path, destination: Path) -> None:
    """The log as it is now, readable by root only."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(log_file, destination)
    destination.chmod(0o600)


def _answer(ctx: InstallContext) -> AnswerFile:
    if ctx.answer is None:
        raise NetinstallError("the disk steps ran before the answer file was read")
    return ctx.answer


def _plan(ctx: InstallContext) -> tuple[Plan, Path]:
    if ctx.plan is None or ctx.disk is None:
        raise NetinstallError("the disk has not been partitioned yet")
    return ctx.plan, ctx.disk
