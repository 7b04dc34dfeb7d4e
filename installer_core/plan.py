"""The install plan (SPEC §7): what a run will do, decided before any download or write.

Values only. ``installer_core.planning.make_plan`` makes an ``InstallPlan`` from the
boot arguments, the answer file and what the machine showed (``installer_core.survey``);
the flows of ``installer_core.install`` walk it. Nothing here changes once made: a step
takes the parts it needs and returns what it made.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from answerfile.bootargs import BootArgs
from answerfile.model import AdminInterface, AnswerFile, BootloaderLocation, Mode
from common.errors import NetinstallError
from common.firmware import Firmware
from installer_core.multipath import MultipathMap
from installer_core.treeinfo import TreeInfo
from partitioning.model import DiskFacts, Plan, Use

WORK = Path("/tmp/netinstall")  # noqa: S108 - the initrd's RAM, ours alone


@dataclass(frozen=True)
class Paths:
    """Where the installer keeps its files and mounts the new root."""

    work: Path = WORK
    target: Path = Path("/mnt/target")  # the new root is mounted here
    log_file: Path = WORK / "install.log"


@dataclass(frozen=True)
class Existing:
    """What an upgrade or a restore found on the disk before writing anything.

    Upgrade: the installation on root; restore: the copy on the backup partition.
    ``firstboot`` is that system's /etc/netinstall/firstboot.json (its SR section and
    management interface are kept), ``sr_uuid`` its first-boot state's SR uuid.
    """

    version: str
    build: str | None
    root_uuid: str  # root's filesystem UUID: re-created with it, so fstab and GRUB hold
    root_label: str | None = None
    firstboot: Mapping[str, Any] = field(default_factory=dict, repr=False)  # may hold a token
    sr_uuid: str | None = None


@dataclass(frozen=True)
class DiskPlan:
    """The run's disk: the device written through and its table.

    A fresh install writes ``table`` (partitioning's plan, made from ``facts``); an
    upgrade or a restore keeps the table it found. ``partitions`` names the device
    node of every partition the run uses, by its use.
    """

    device: Path  # the disk, the iSCSI LUN or the multipath map
    what: str  # "the primary disk", "the disk of the existing installation", ...
    facts: DiskFacts  # the disk as it was read when planning
    table: Plan
    partitions: Mapping[Use, Path]
    multipath: MultipathMap | None = None

    def partition(self, use: Use) -> Path:
        device = self.partitions.get(use)
        if device is None:
            layout = self.table.layout.value
            raise NetinstallError(
                f"the {layout} layout on {self.device} has no {use.value} partition"
            )
        return device


class StagingPlace(enum.StrEnum):
    """Where the payload is downloaded and verified (SPEC §7)."""

    RAM = "RAM"
    BACKUP = "the new backup partition"  # a fresh install whose payload does not fit in RAM
    LOGS = "the logs partition"  # an upgrade's, in a directory of its own


@dataclass(frozen=True)
class Staging:
    place: StagingPlace
    directory: Path  # the payload's files go here
    device: Path | None = None  # the partition mounted for it (not RAM)
    mount: Path | None = None  # where that partition is mounted
    reason: str = ""  # why this place, for the log and ``netinstall plan``

    @property
    def on_disk(self) -> bool:
        return self.place is not StagingPlace.RAM


@dataclass(frozen=True)
class PayloadFile:
    name: str  # the path in the repository, as .treeinfo lists it
    url: str
    sha256: str
    size: int | None  # bytes; None when the server did not say


@dataclass(frozen=True)
class PackSource:
    """A supplemental pack source: the repository (whose pack list is optional) or a
    driver source of the answer file (a list, or itself one pack)."""

    url: str  # ends in "/"
    optional_list: bool


@dataclass(frozen=True)
class FetchPlan:
    """What the run downloads: every file of .treeinfo, then the packs."""

    repository: str  # ends in "/"
    treeinfo: TreeInfo | None  # None only when ``netinstall plan`` could not read it
    files: tuple[PayloadFile, ...]
    packs: tuple[PackSource, ...]
    unread: str | None = None  # why .treeinfo was not read (``netinstall plan`` only)

    @property
    def size(self) -> int:
        """The bytes of the files whose size is known."""
        return sum(f.size or 0 for f in self.files)


@dataclass(frozen=True)
class BootloaderPlan:
    firmware: Firmware
    disk: Path  # GRUB's core goes here (BIOS); the ESP is on it (UEFI)
    esp_number: int | None  # the EFI system partition's number (UEFI)
    write_boot_entry: bool
    location: BootloaderLocation


@dataclass(frozen=True)
class NetworkPlan:
    """The management network of the installed system, and the NICs kept off it."""

    admin_name: str | None  # the management NIC (ethN); None: an upgrade keeps its own
    host_mac: str | None  # the MAC the host reports as (the NIC that fetched the answer file)
    admin: AdminInterface | None  # the answer file's settings (None: DHCP, or kept)
    storage_nics: tuple[str, ...] = ()  # the iBFT's NICs: reserved for storage


@dataclass(frozen=True)
class InstallPlan:
    """Everything a run does, decided and checked before its first download or write."""

    mode: Mode
    args: BootArgs
    firmware: Firmware
    answer: AnswerFile
    disk: DiskPlan
    network: NetworkPlan
    bootloader: BootloaderPlan
    fetch: FetchPlan | None  # None: a restore reads no repository
    staging: Staging | None  # None with ``fetch``
    existing: Existing | None = None  # upgrade, restore: what was found
    paths: Paths = Paths()
    host_memory_mib: int | None = None  # as Xen reports it; None outside Xen's dom0
    notes: tuple[str, ...] = ()
    # The key this install enrolled with the server (None: no server); first boot's
    # ``running`` report proves it (firstboot.json), docs/protocol.md "Install tokens".
    install_key: str | None = field(default=None, repr=False)
    update_key: str | None = None  # the server's update key, written into dom0


def _size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def _disk_lines(disk: DiskPlan) -> list[str]:
    table = disk.table
    lines = [
        f"disk: {disk.what} {disk.device}, {_size(table.disk_size)}: "
        f"{table.label.value.upper()} label, {table.layout.value} layout"
        + (f" (multipath map {disk.multipath.name})" if disk.multipath else "")
    ]
    for part in table.partitions:
        fs = part.filesystem.value if part.filesystem.value != "none" else "-"
        where = part.mount_point or "-"
        kept = "  kept" if part.keep else ""
        device = disk.partitions.get(part.use)
        lines.append(
            f"  {part.number}  {part.use.value:<9} {_size(part.size):>9}  {fs:<5} {where:<9} "
            f"{device or '-'}{kept}"
        )
    return lines


def _network_line(plan: InstallPlan) -> str:
    net = plan.network
    admin = net.admin
    if net.admin_name is not None:
        nic = net.admin_name
    elif plan.mode is not Mode.FRESH:
        nic = "kept from the installation"
    elif admin is not None and admin.hwaddr:
        nic = f"the NIC with MAC {admin.hwaddr}"
    else:
        nic = "the NIC that fetches the answer file"
    proto = f"{admin.proto.value}" if admin is not None else "dhcp"
    if admin is not None and admin.ipaddr:
        proto += f" {admin.ipaddr}/{admin.subnet}" + (
            f" via {admin.gateway}" if admin.gateway else ""
        )
    if admin is not None and admin.vlan:
        proto += f", VLAN {admin.vlan}"
    backend = plan.answer.network_backend.value
    line = f"network: management interface {nic} ({proto}), {backend} backend"
    if net.host_mac:
        line += f"; the host reports as {net.host_mac}"
    if net.storage_nics:
        line += f"; storage NICs (iBFT, kept off it): {', '.join(net.storage_nics)}"
    return line


def describe(plan: InstallPlan) -> list[str]:
    """The plan as lines of text: the installer's log and ``netinstall plan`` print them."""
    mode = {Mode.FRESH: "fresh install", Mode.UPGRADE: "upgrade", Mode.RESTORE: "restore"}
    lines = [f"{mode[plan.mode]}, {plan.firmware.value} firmware"]
    if plan.existing is not None:
        found = plan.existing
        build = f" (build {found.build})" if found.build else ""
        lines.append(f"found: netinstall {found.version}{build}, root UUID {found.root_uuid}")
    lines += _disk_lines(plan.disk)
    fetch, staging = plan.fetch, plan.staging
    if fetch is None:
        lines.append("fetch: nothing (a restore reads no repository)")
    else:
        info = fetch.treeinfo
        what = f"netinstall {info.version} (build {info.build})" if info else "its .treeinfo"
        lines.append(f"fetch: {fetch.repository}: {what}")
        if fetch.unread:
            lines.append(f"  {fetch.unread}")
        for item in fetch.files:
            lines.append(f"  {item.name}  {_size(item.size)}  sha256 {item.sha256[:16]}...")
        if fetch.files:
            lines.append(f"  {len(fetch.files)} files, {_size(fetch.size)}")
        for pack in fetch.packs:
            kind = "its pack list, if any" if pack.optional_list else "driver source"
            lines.append(f"  packs: {pack.url} ({kind})")
    if staging is not None:
        at = f"{staging.device}, " if staging.device else ""
        lines.append(f"staging: {staging.place.value} ({at}{staging.directory}): {staging.reason}")
    boot = plan.bootloader
    entry = ""
    if boot.firmware is Firmware.UEFI:
        entry = f", ESP partition {boot.esp_number}, " + (
            "EFI boot entry" if boot.write_boot_entry else "no EFI boot entry"
        )
    lines.append(f"boot loader: GRUB for {boot.firmware.value.upper()} on {boot.disk}{entry}")
    scripts = [f"{s.stage.value} {s.source.location}" for s in plan.answer.scripts]
    lines.append(f"scripts: {'; '.join(scripts) if scripts else 'none'}")
    lines.append(_network_line(plan))
    memory = plan.host_memory_mib
    lines.append(f"host memory: {f'{memory} MiB (xl info)' if memory else 'not checked here'}")
    lines += [f"note: {note}" for note in plan.notes]
    return lines
