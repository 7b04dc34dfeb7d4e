"""The root filesystem's copy on the backup partition, and root re-created (SPEC §7).

* ``backup_root`` (upgrade, only after the payload has verified): mkfs the backup
  partition, copy the current root onto it with ``cp --archive`` (owners by
  number, modes, times, xattrs and ACLs, hard links, device nodes, symlinks,
  sparse files), then write ``/.netinstall-backup.json``: what it holds (version,
  build), when it was taken and from which partition and filesystem UUID. The
  dom0 agent's staged installer (``/boot/netinstall-installer``, its GRUB entry)
  is left out: it belongs to the run that is replacing the system.
* ``make_root``: mkfs.ext4 on root with the filesystem UUID (and label) it had,
  so the fstab and grub.cfg of either system keep finding it.
* ``restore_root`` (restore): the backup copied back onto the new root, without
  the marker.

Nothing here ever formats the local SR partition: each mkfs checks its device.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.errors import NetinstallError
from common.process import CommandRunner, run
from installer_core.disk import blkid_value
from installer_core.existing import MARKER
from installer_core.mounts import mounted
from installer_core.plan import DiskPlan, Existing
from partitioning.model import Use

log = logging.getLogger(__name__)

COPY_TIMEOUT = 3 * 3600  # seconds; 18 GiB of small files on a slow disk
MKFS_TIMEOUT = 1800
# The agent's one-time installer (hypervisor_payload/dom0/netinstall_dom0/layout.py).
STAGED = ("boot/netinstall-installer", "boot/grub/netinstall-installer.cfg")
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def copy_command(source: Path, destination: Path) -> list[str]:
    """Everything in ``source`` into ``destination``, as it is (one filesystem only)."""
    return ["cp", "--archive", "--one-file-system", f"{source}/.", f"{destination}/"]


def _device(disk: DiskPlan, use: Use) -> Path:
    """A partition to write to; never the local SR's."""
    device = disk.partitions.get(use)
    if device is None:
        raise NetinstallError(f"the installation has no {use.value} partition")
    if device == disk.partitions.get(Use.SR):
        raise NetinstallError(f"refusing to write to {device}: it is the local SR partition")
    return device


def drop_staged(top: Path) -> None:
    """Remove the agent's staged installer from a copy of root."""
    for rel in STAGED:
        path = top / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def marker_data(existing: Existing, source: Path, when: datetime) -> dict[str, Any]:
    """What ``/.netinstall-backup.json`` says: the backup's version and where it came from."""
    return {
        "version": existing.version,
        "build": existing.build,
        "date": when.astimezone(UTC).isoformat(timespec="seconds"),
        "source_partition": str(source),
        "source_uuid": existing.root_uuid,
    }


def write_marker(top: Path, data: dict[str, Any]) -> None:
    path = top / MARKER
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    path.chmod(0o644)


def backup_root(
    disk: DiskPlan,
    existing: Existing,
    work: Path,
    runner: CommandRunner = run,
    now: Clock = _utc_now,
) -> None:
    """Step (upgrade): the current root, as it is, onto a new filesystem on the backup partition."""
    root, backup = _device(disk, Use.ROOT), _device(disk, Use.BACKUP)
    runner(["mkfs.ext4", "-F", "-q", "-L", "backup", str(backup)], timeout=MKFS_TIMEOUT)
    with (
        mounted(runner, root, work / "old-root", fstype="ext4", options="ro") as source,
        mounted(runner, backup, work / "backup", fstype="ext4") as copy,
    ):
        log.info(
            "copying root %s (netinstall %s) to the backup partition %s",
            root,
            existing.version,
            backup,
        )
        runner(copy_command(source, copy), timeout=COPY_TIMEOUT)
        drop_staged(copy)
        write_marker(copy, marker_data(existing, root, now()))
        runner(["sync"], timeout=600)
    log.info("the backup partition %s holds netinstall %s", backup, existing.version)


def make_root(
    disk: DiskPlan, existing: Existing, *, upgrade: bool, runner: CommandRunner = run
) -> str:
    """Step: a new ext4 on root with the UUID and label the old one had; that UUID."""
    root = _device(disk, Use.ROOT)
    label = existing.root_label or "root"
    command = ["mkfs.ext4", "-F", "-q", "-L", label, "-U", existing.root_uuid, str(root)]
    runner(command, timeout=MKFS_TIMEOUT)
    made = blkid_value(runner, root, "UUID")
    if made.lower() != existing.root_uuid.lower():
        raise NetinstallError(
            f"mkfs.ext4 gave {root} the UUID {made}, not {existing.root_uuid} as asked"
        )
    log.info("root %s re-created with UUID %s (label %s)", root, made, label)
    if upgrade:
        log.info(
            "from here a failed upgrade leaves root unbootable; a restore (<restore>) "
            "brings netinstall %s back from the backup partition",
            existing.version,
        )
    return existing.root_uuid


def restore_root(
    disk: DiskPlan, existing: Existing, work: Path, runner: CommandRunner = run
) -> None:
    """Step (restore): the backup partition's files onto the new root, the marker left out."""
    root, backup = _device(disk, Use.ROOT), _device(disk, Use.BACKUP)
    with (
        mounted(runner, backup, work / "backup", fstype="ext4", options="ro") as source,
        mounted(runner, root, work / "new-root", fstype="ext4") as target,
    ):
        log.info("copying the backup %s (netinstall %s) to root %s", backup, existing.version, root)
        runner(copy_command(source, target), timeout=COPY_TIMEOUT)
        (target / MARKER).unlink(missing_ok=True)
        drop_staged(target)
        runner(["sync"], timeout=600)
    log.info("root %s holds netinstall %s again", root, existing.version)
