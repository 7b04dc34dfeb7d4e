"""Find what an upgrade replaces or a restore brings back (SPEC §6, §7); nothing is written.

Both read the disk's partition table (``partitioning.detect`` names the layout),
plan it with the planner's upgrade rules and refuse any plan that would change
the table (our own installs use the new GPT layout, which stays as it is), then
mount one filesystem read-only and read what it holds:

* upgrade (``find_installation``): root, its ``/etc/netinstall-release`` (a disk
  without one is "no netinstall installation"), first-boot data and state;
* restore (``find_backup``): the backup partition, its ``/.netinstall-backup.json``
  marker (written by ``installer_core.backup``) and the same first-boot files.

The root filesystem's UUID is read too: root is re-created with it later, so the
fstab and the boot loader stay valid. ``check_layout`` (the upgrade's layout
step, after the download) reads the table again and asserts the local SR
partition is kept exactly where it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from answerfile.model import Disk
from common.errors import CommandError, InputError, NetinstallError
from common.firmware import Firmware
from common.process import CommandRunner, run
from installer_core import disk as disk_steps
from installer_core.mounts import mounted
from installer_core.plan import DiskPlan, Existing
from partitioning import facts, planner
from partitioning.model import DiskFacts, Label, Mode, Options, Plan, Use

log = logging.getLogger(__name__)

RELEASE = "etc/netinstall-release"
FIRSTBOOT = "etc/netinstall/firstboot.json"
STATE = "var/lib/netinstall/firstboot-state.json"
MARKER = ".netinstall-backup.json"  # at the top of the backup partition


@dataclass
class Probe:
    """How the disk is read; tests replace each part."""

    runner: CommandRunner = run
    read_facts: Callable[[Path, bool], DiskFacts] = facts.read_facts
    device: Callable[[Disk, str], Path] = disk_steps.device_of


def parse_release(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of /etc/netinstall-release (os-release syntax, quotes removed).

    As dom0's ``netinstall_dom0.facts.parse_release`` reads them; that package is
    not in the installer image, so the few lines are here again.
    """
    values = {}
    for raw in text.splitlines():
        key, sep, value = raw.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def read_object(path: Path, what: str) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when there is no file; ``InputError`` if unusable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{what} cannot be read: {exc}; nothing was written") from exc
    if not isinstance(data, dict):
        raise InputError(f"{what} is not a JSON object; nothing was written")
    return data


@dataclass(frozen=True)
class Found:
    """The disk of an upgrade or a restore, its kept table, and what it holds."""

    device: Path
    facts: DiskFacts
    table: Plan
    existing: Existing


def _check_boot(plan: Plan, firmware: Firmware, disk: Path) -> None:
    """The boot loader can go back the way the installer booted (SPEC §7: as on a fresh
    install); else refuse now, before the download."""
    if firmware is Firmware.UEFI and plan.by_use(Use.ESP) is None:
        raise InputError(
            f"the installation on {disk} has no EFI system partition (it boots with legacy "
            "BIOS), but this installer booted with UEFI; boot it in legacy mode; "
            "nothing was written"
        )
    if firmware is Firmware.BIOS and plan.label is Label.GPT and plan.by_use(Use.BIOS_BOOT) is None:
        raise InputError(
            f"the installation on {disk} has no BIOS boot partition (it boots with UEFI), "
            "but this installer booted with legacy BIOS; boot it with UEFI; nothing was written"
        )


def kept_table(disk: Path, found: DiskFacts, firmware: Firmware) -> Plan:
    """The planner's upgrade plan for the disk, refused unless it keeps every partition.

    The facts are read with ``sr_has_vms`` true: the one relayout that rewrites the SR
    (old GPT to new GPT) needs an SR without VMs, and this installer changes no layout yet.
    """
    install = found.installation
    if install is None:
        raise InputError(
            f"no netinstall installation on {disk}: its partition table holds none of the "
            "layouts netinstall installs (SPEC §6); nothing was written"
        )
    options = Options(firmware=firmware, mode=Mode.UPGRADE)
    plan = planner.plan(found, options)
    if any(not part.keep for part in plan.partitions):
        raise InputError(
            f"the {install.layout.value} layout on {disk} needs its partition table changed "
            f"({'; '.join(plan.notes)}), which this installer does not do yet; "
            "nothing was written"
        )
    _check_boot(plan, firmware, disk)
    log.info("%s: %s layout; %s", disk, install.layout.value, "; ".join(plan.notes))
    return plan


def assert_sr_kept(before: Plan, after: Plan) -> None:
    """The local SR partition is kept, at the same place and size: never written."""
    old, new = before.by_use(Use.SR), after.by_use(Use.SR)
    if old is None and new is None:
        return
    same = (
        old is not None
        and new is not None
        and new.keep
        and (old.number, old.start, old.size) == (new.number, new.start, new.size)
    )
    if not same:
        raise NetinstallError("the layout step would change the local SR partition; refused")


def filesystem_value(runner: CommandRunner, device: Path, tag: str) -> str | None:
    """A blkid tag of ``device``; None when it holds no filesystem (or no such tag)."""
    try:
        return disk_steps.blkid_value(runner, device, tag)
    except (CommandError, NetinstallError):
        return None


def read_system(root: Path, where: str) -> tuple[dict[str, Any], str | None]:
    """The first-boot data and the SR uuid of the system at ``root`` (``where`` names it).

    Refuses when its SR cannot be kept safely: no firstboot.json, or first boot
    finished without recording the SR uuid.
    """
    data = read_object(root / FIRSTBOOT, f"{where}: /{FIRSTBOOT}")
    if data is None:
        raise InputError(
            f"{where} has no /{FIRSTBOOT}, so its SR and management interface are unknown; "
            "nothing was written"
        )
    state = read_object(root / STATE, f"{where}: /{STATE}") or {}
    sr_uuid = state.get("sr_uuid")
    if sr_uuid is not None and not isinstance(sr_uuid, str):
        raise InputError(f"{where}: /{STATE} has an sr_uuid that is not a string")
    if data.get("sr") and state.get("done") is True and not sr_uuid:
        raise InputError(
            f"{where}: first boot finished without recording the SR uuid in /{STATE}; "
            "the local SR cannot be kept safely; nothing was written"
        )
    return data, sr_uuid


@contextmanager
def _read_only(probe: Probe, device: Path, where: Path, cannot: str) -> Iterator[Path]:
    """``device`` mounted read-only at ``where``; if it cannot be, the ``InputError`` ``cannot``."""
    try:
        with mounted(probe.runner, device, where, fstype="ext4", options="ro") as top:
            yield top
    except CommandError as exc:
        raise InputError(f"{cannot} ({exc}); nothing was written") from exc


def _table(
    named: Disk | None, element: str, firmware: Firmware, probe: Probe
) -> tuple[Path, DiskFacts, Plan, dict[Use, Path]]:
    """The disk the answer file names, its facts, its kept table and its partitions."""
    if named is None:
        raise InputError(f"the answer file names no <{element}>")
    disk = probe.device(named, element)
    found = probe.read_facts(disk, True)
    plan = kept_table(disk, found, firmware)
    return disk, found, plan, disk_steps.partition_map(plan, disk, kept=True)


def find_installation(
    named: Disk | None, firmware: Firmware, work: Path, probe: Probe | None = None
) -> Found:
    """The installation an upgrade replaces, on <existing-installation>: its table,
    version and settings (read-only)."""
    probe = probe or Probe()
    disk, facts_found, plan, devices = _table(named, "existing-installation", firmware, probe)
    root = devices[Use.ROOT]
    uuid = filesystem_value(probe.runner, root, "UUID")
    if uuid is None:
        raise InputError(
            f"no netinstall installation on {disk}: its root partition {root} holds no "
            "filesystem; nothing was written"
        )
    cannot = f"no netinstall installation on {disk}: its root partition {root} cannot be mounted"
    with _read_only(probe, root, work / "old-root", cannot) as old:
        release = parse_release(_text(old / RELEASE))
        if not release.get("VERSION"):
            raise InputError(
                f"no netinstall installation on {disk}: its root partition {root} has "
                f"no VERSION in /{RELEASE}; nothing was written"
            )
        data, sr_uuid = read_system(old, f"the installation on {disk}")
    version, build = release["VERSION"], release.get("BUILD") or None
    label = filesystem_value(probe.runner, root, "LABEL")
    log.info(
        "found netinstall %s (build %s) on %s, root %s (UUID %s), SR uuid %s",
        version,
        build or "unknown",
        disk,
        root,
        uuid,
        sr_uuid or "not made yet",
    )
    return Found(disk, facts_found, plan, Existing(version, build, uuid, label, data, sr_uuid))


def read_marker(top: Path, backup: Path) -> dict[str, Any]:
    """The backup's marker, or an ``InputError`` saying the partition holds no backup."""
    marker = read_object(top / MARKER, f"the backup partition {backup}: /{MARKER}")
    if marker is None or not isinstance(marker.get("version"), str) or not marker["version"]:
        raise InputError(
            f"the backup partition {backup} holds no netinstall backup (no /{MARKER} "
            "naming a version); nothing was written"
        )
    return marker


def find_backup(
    named: Disk | None, firmware: Firmware, work: Path, probe: Probe | None = None
) -> Found:
    """The backup a restore brings back: the backup partition of <backup-disk>, its
    marker and settings (read-only)."""
    probe = probe or Probe()
    disk, facts_found, plan, devices = _table(named, "backup-disk", firmware, probe)
    backup, root = devices[Use.BACKUP], devices[Use.ROOT]
    cannot = f"the backup partition {backup} holds no netinstall backup: it cannot be mounted"
    with _read_only(probe, backup, work / "backup", cannot) as top:
        marker = read_marker(top, backup)
        data, sr_uuid = read_system(top, f"the backup on {backup}")
    uuid = filesystem_value(probe.runner, root, "UUID") or marker.get("source_uuid")
    if not isinstance(uuid, str) or not uuid:
        raise InputError(
            f"the root partition {root} holds no filesystem and the backup does not name "
            "its UUID; nothing was written"
        )
    build = marker.get("build") if isinstance(marker.get("build"), str) else None
    label = filesystem_value(probe.runner, root, "LABEL")
    log.info(
        "the backup partition %s holds netinstall %s (taken %s from %s)",
        backup,
        marker["version"],
        marker.get("date", "at an unknown time"),
        marker.get("source_partition", "root"),
    )
    found = Existing(marker["version"], build, uuid, label, data, sr_uuid)
    return Found(disk, facts_found, plan, found)


def check_layout(disk: DiskPlan, firmware: Firmware, probe: Probe | None = None) -> None:
    """Step (upgrade, after the download): the table is still the one found and is kept.

    SPEC §6: the new GPT layout (every install of ours), DOS and old GPT with a
    boot partition stay as they are; the local SR partition is never touched.
    """
    probe = probe or Probe()
    plan = kept_table(disk.device, probe.read_facts(disk.device, True), firmware)
    if plan != disk.table:
        raise NetinstallError(
            f"the partition table of {disk.device} changed during the install; nothing was written"
        )
    assert_sr_kept(disk.table, plan)
    log.info("the partition table of %s stays as it is; the local SR is not touched", disk.device)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path.name} cannot be read: {exc}") from exc
