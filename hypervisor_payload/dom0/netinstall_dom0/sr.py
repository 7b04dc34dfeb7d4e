"""The local SR: probe what LVM already holds, plan the missing steps, apply them.

LVM: a PV on each device and the volume group ``VG_XenStorage-<sr-uuid>`` over
them. ext: the same group, one logical volume ``<sr-uuid>`` over all its space,
ext4 on it, mounted at ``/var/run/sr-mount/<sr-uuid>`` and listed in fstab.
Every step that is already done is skipped, so a re-run after a power loss
finishes the job; a device that is a PV of another volume group is refused
before anything is written.

First boot starts once the local file systems are mounted, not after every device
has settled: ``ensure_sr`` first waits (``udevadm wait``, at most ``DEVICE_WAIT``
seconds) until udev has initialised each SR device and made its link.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from common.process import CommandRunner
from common.protocol.messages import SrType

from .config import SrConfig
from .errors import SrRefused
from .jsonfile import write_atomic
from .layout import SR_MOUNT_BASE, Layout

log = logging.getLogger(__name__)

Resolve = Callable[[str], str]

# How long first boot waits for an SR device (its udev link) to appear: systemd's own
# wait for a device in this image (DefaultDeviceTimeoutSec, dom0_config.SYSTEM_CONF).
DEVICE_WAIT = 300


def wait_command(devices: tuple[str, ...]) -> tuple[str, ...]:
    return ("udevadm", "wait", f"--timeout={DEVICE_WAIT}", *devices)


def vg_name(sr_uuid: str) -> str:
    return f"VG_XenStorage-{sr_uuid}"


def lv_path(sr_uuid: str) -> str:
    return f"/dev/{vg_name(sr_uuid)}/{sr_uuid}"


def mount_point(sr_uuid: str) -> str:
    return f"{SR_MOUNT_BASE}/{sr_uuid}"


@dataclass(frozen=True)
class SrFacts:
    """What the system holds now. Device names in ``pv_vgs`` are resolved."""

    pv_vgs: Mapping[str, str]  # PV -> its volume group, "" for a PV in none
    vgs: frozenset[str]
    lv_exists: bool = False
    fs_type: str | None = None  # on the ext SR's logical volume
    mounted: bool = False


@dataclass(frozen=True)
class SrPlan:
    vg: str
    commands: tuple[tuple[str, ...], ...]
    fstab_line: str | None = None  # ext: the entry that mounts the SR at boot
    mount: tuple[str, ...] | None = None  # ext: the mount command, when not mounted


def probe(runner: CommandRunner, sr_uuid: str, resolve: Resolve = os.path.realpath) -> SrFacts:
    pvs = runner(["pvs", "--noheadings", "--separator", "|", "-o", "pv_name,vg_name"])
    pv_vgs: dict[str, str] = {}
    for line in pvs.stdout.splitlines():
        if line.strip():
            name, _, vg = line.strip().partition("|")
            pv_vgs[resolve(name.strip())] = vg.strip()
    vgs_out = runner(["vgs", "--noheadings", "-o", "vg_name"]).stdout
    vgs = frozenset(line.strip() for line in vgs_out.splitlines() if line.strip())
    vg = vg_name(sr_uuid)
    if vg not in vgs:
        return SrFacts(pv_vgs, vgs)
    lvs_out = runner(["lvs", "--noheadings", "-o", "lv_name", vg]).stdout
    if sr_uuid not in {line.strip() for line in lvs_out.splitlines()}:
        return SrFacts(pv_vgs, vgs)
    blkid = runner(["blkid", "-p", "-o", "value", "-s", "TYPE", lv_path(sr_uuid)], ok_codes=(0, 2))
    fs_type = blkid.stdout.strip() or None
    findmnt = runner(
        ["findmnt", "-n", "-o", "SOURCE", "--mountpoint", mount_point(sr_uuid)], ok_codes=(0, 1)
    )
    return SrFacts(pv_vgs, vgs, True, fs_type, findmnt.returncode == 0)


def plan(sr: SrConfig, sr_uuid: str, facts: SrFacts, resolve: Resolve = os.path.realpath) -> SrPlan:
    """The steps still missing; ``SrRefused`` if one would take another group's PV."""
    vg = vg_name(sr_uuid)
    commands: list[tuple[str, ...]] = []
    to_add: list[str] = []
    for device in sr.devices:
        owner = facts.pv_vgs.get(resolve(device))
        if owner == vg:
            continue
        if owner:
            raise SrRefused(
                f"{device} is a physical volume of the volume group {owner}: "
                "the local SR will not take it; free it or change the SR devices"
            )
        if owner is None:
            commands.append(("pvcreate", "--yes", device))
        to_add.append(device)
    if vg not in facts.vgs:
        commands.append(("vgcreate", vg, *to_add))
    elif to_add:
        commands.append(("vgextend", vg, *to_add))
    if sr.type is SrType.LVM:
        return SrPlan(vg, tuple(commands))

    lv = lv_path(sr_uuid)
    if not facts.lv_exists:
        commands.append(("lvcreate", "--yes", "-l", "100%FREE", "-n", sr_uuid, vg))
    if facts.fs_type is None:
        commands.append(("mkfs.ext4", "-q", lv))
    elif facts.fs_type != "ext4":
        raise SrRefused(f"{lv} holds a {facts.fs_type} file system, not ext4: not formatting it")
    mount = None if facts.mounted else ("mount", "-t", "ext4", lv, mount_point(sr_uuid))
    fstab_line = f"{lv} {mount_point(sr_uuid)} ext4 defaults,nofail 0 2"
    return SrPlan(vg, tuple(commands), fstab_line, mount)


def apply(sr_plan: SrPlan, sr_uuid: str, runner: CommandRunner, layout: Layout) -> None:
    for argv in sr_plan.commands:
        log.info("local SR: %s", " ".join(argv))
        runner(argv)
    if sr_plan.fstab_line is not None:
        add_fstab_entry(layout, sr_plan.fstab_line)
    if sr_plan.mount is not None:
        layout.sr_mount_dir(sr_uuid).mkdir(parents=True, exist_ok=True)
        log.info("local SR: %s", " ".join(sr_plan.mount))
        runner(sr_plan.mount)


def add_fstab_entry(layout: Layout, line: str) -> None:
    """Append ``line`` to fstab unless an entry already mounts at its mount point."""
    target = line.split()[1]
    same = {target, target.replace("/var/run/", "/run/", 1)}
    try:
        text = layout.fstab.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    for entry in text.splitlines():
        fields = entry.split()
        if len(fields) > 1 and not fields[0].startswith("#") and fields[1] in same:
            return
    if text and not text.endswith("\n"):
        text += "\n"
    text += f"# netinstall local SR\n{line}\n"
    write_atomic(layout.fstab, text.encode(), mode=0o644)


def ensure_sr(
    sr: SrConfig,
    sr_uuid: str,
    runner: CommandRunner,
    layout: Layout,
    resolve: Resolve = os.path.realpath,
) -> SrPlan:
    """Create what is missing of the local SR; returns the plan it applied."""
    runner(wait_command(sr.devices))
    facts = probe(runner, sr_uuid, resolve)
    sr_plan = plan(sr, sr_uuid, facts, resolve)
    if not sr_plan.commands and sr_plan.mount is None:
        log.info("local SR %s: already in place", sr_plan.vg)
    apply(sr_plan, sr_uuid, runner, layout)
    return sr_plan
