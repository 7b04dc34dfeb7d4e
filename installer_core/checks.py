"""Hardware checks before anything is downloaded or written (SPEC §7).

* The disk (the primary disk; an upgrade's existing installation, a restore's
  backup disk) exists, is a block device and has at least the 12 GiB any
  layout needs (``partitioning.planner.MIN_ANY``); the partition step plans the
  exact layout later and refuses what does not fit (46 GiB for GPT).
* The host's memory as Xen reports it (``xl info`` total_memory, not dom0's
  share) is at least ``MIN_HOST_MEMORY_MIB``: 1024 MiB, what dom0 (itself given
  up to 2 GiB on larger hosts) needs to boot and leave room for one small guest.
  Outside Xen's dom0 (a test VM booting the installer kernel alone) the check is
  skipped and the log says so.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from answerfile.model import AnswerFile, Disk, Mode
from common.errors import CommandError, InputError, NetinstallError
from common.process import run
from installer_core import disk as disk_steps
from installer_core import iscsi, multipath
from installer_core.context import InstallContext
from installer_core.fetch import Runner
from installer_core.selftest import block_disks, xl_total_memory
from partitioning.planner import MIN_ANY, human

log = logging.getLogger(__name__)

MIN_HOST_MEMORY_MIB = 1024
SECTOR = 512  # /sys/block/X/size counts 512-byte units


def _is_block(path: Path) -> bool:
    try:
        return stat.S_ISBLK(path.stat().st_mode)
    except OSError:
        return False


@dataclass
class Machine:
    """What the checks read; tests replace each part."""

    runner: Runner = run
    sys_block: Path = Path("/sys/block")
    xen_capabilities: Path = Path("/proc/xen/capabilities")
    is_block: Callable[[Path], bool] = _is_block


def disk_size(device: Path, machine: Machine) -> int | None:
    """The size of a whole disk in bytes (the kernel's view), None when unknown."""
    name = device.resolve().name if device.is_symlink() else device.name
    try:
        return int((machine.sys_block / name / "size").read_text().strip()) * SECTOR
    except (OSError, ValueError):
        return None


_DISKS = {  # mode -> the answer file's element for the run's disk, and what to call it
    Mode.FRESH: ("primary-disk", "the primary disk"),
    Mode.UPGRADE: ("existing-installation", "the disk of the existing installation"),
    Mode.RESTORE: ("backup-disk", "the backup disk"),
}


def install_disk(answer: AnswerFile | None) -> tuple[Disk, str]:
    """The disk the run works on and what to call it: the primary disk of a fresh
    install, the existing installation's disk (upgrade), the backup disk (restore)."""
    mode = answer.mode if answer else Mode.FRESH
    element, name = _DISKS[mode]
    disk = None
    if answer is not None:
        primary = answer.primary_disk.disk if answer.primary_disk else None
        disk = {
            Mode.FRESH: primary,
            Mode.UPGRADE: answer.existing_installation,
            Mode.RESTORE: answer.backup_disk,
        }[mode]
    if disk is None:
        raise InputError(f"the answer file names no <{element}>")
    return disk, name


def check_disk(ctx: InstallContext, machine: Machine) -> None:
    """The run's disk is present and big enough for some layout; an iSCSI primary
    disk is attached here (``iscsi.san_device``), before anything is downloaded."""
    disk, name = install_disk(ctx.answer)
    fresh = ctx.answer is None or ctx.answer.mode is Mode.FRESH
    if ctx.args.device_mapper_multipath and not fresh:
        raise InputError(
            f"{name} {disk.spec!r}: upgrading or restoring an installation on a multipath "
            "device is not supported yet (boot the installer without device_mapper_multipath "
            "to work through one path); nothing was written"
        )
    if disk.path is None:  # iSCSI: attached here for a fresh install, refused otherwise
        if not fresh:
            disk_steps.device_of(disk, name)  # raises: an upgrade or restore on iSCSI
        device = disk_steps.fresh_device(ctx, disk, "primary-disk")
    else:
        device = Path(disk.path)
        if not machine.is_block(device):
            found = ", ".join(d.name for d in block_disks(machine.sys_block)) or "none"
            raise InputError(
                f"{name} {device} is not a block device on this machine (disks: {found})"
            )
        if fresh:
            device = multipath.disk_for(ctx, device, name, machine.sys_block)
    size = disk_size(device, machine)
    if size is None:
        log.warning("the size of %s is unknown; the partition step checks it", device)
    elif size < MIN_ANY:
        raise InputError(
            f"{name} {device} has {human(size)}; netinstall needs at least {human(MIN_ANY)}"
        )
    else:
        log.info("%s %s: %s", name, device, human(size))


def host_memory_mib(machine: Machine) -> int | None:
    """The host's memory in MiB as Xen reports it; None outside Xen's dom0."""
    try:
        if "control_d" not in machine.xen_capabilities.read_text():
            return None
    except OSError:
        return None
    try:
        return xl_total_memory(machine.runner(["xl", "info"], timeout=60).stdout)
    except (CommandError, ValueError) as exc:
        raise NetinstallError(f"cannot read the host's memory with xl info: {exc}") from exc


def check_memory(machine: Machine) -> None:
    memory = host_memory_mib(machine)
    if memory is None:
        log.info("not running as Xen's dom0: the host memory check is skipped")
    elif memory < MIN_HOST_MEMORY_MIB:
        raise InputError(
            f"the host has {memory} MiB of memory (xl info); netinstall needs at least "
            f"{MIN_HOST_MEMORY_MIB} MiB"
        )
    else:
        log.info("host memory: %d MiB (xl info)", memory)


def check_storage_nic(ctx: InstallContext) -> None:
    """The management interface the answer file names is not the iBFT's storage NIC."""
    admin = ctx.answer.admin_interface if ctx.answer is not None else None
    if admin is not None:
        names, macs = [admin.name] if admin.name else [], [admin.hwaddr] if admin.hwaddr else []
        iscsi.check_storage_nic(ctx, names, "admin-interface", macs)


def check_hardware(ctx: InstallContext, machine: Machine | None = None) -> None:
    """Step: the disk and memory checks; the management NIC is not the storage NIC."""
    machine = machine or Machine()
    check_storage_nic(ctx)
    check_disk(ctx, machine)
    check_memory(machine)
