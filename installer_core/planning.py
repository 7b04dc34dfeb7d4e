"""The install planner (SPEC §7): boot arguments + answer file + machine facts -> one plan.

Pure: ``make_plan`` reads nothing itself. The facts come from the machine
(``installer_core.survey`` in the installer; the options of ``netinstall plan``
on a workstation), the payload's file list from ``learn_payload``, which is
called last, once everything else has been checked: a refusal the planner knows
costs no request for the repository. Every refusal is one sentence, an
``InputError`` (``PlanError`` for the partition layout), raised before anything
is downloaded or written:

* options that contradict each other (multipath or iSCSI for an upgrade or a
  restore, an iSCSI disk without ``use_ibft``, iSCSI guest disks, a local source
  without a server; partitioning's own: disable-gpt on UEFI, zap-utility-partitions
  with preserve-first-partition=true);
* a disk that is missing (``survey``) or too small (12 GiB for any layout, 46 GiB
  for GPT, partitioning's planner), a layout an upgrade cannot keep (``existing``);
* the host's memory below 1024 MiB as Xen reports it;
* a management interface that is the iBFT's storage NIC, or that cannot be found;
* a payload too big for RAM with no partition that can hold it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from answerfile.bootargs import BootArgs
from answerfile.model import AnswerFile, Disk, DiskKind, Mode
from common.errors import InputError, PlanError
from common.firmware import Firmware
from installer_core.fetch import repository_url, split_pin
from installer_core.multipath import MultipathMap
from installer_core.network import Nic
from installer_core.plan import (
    BootloaderPlan,
    DiskPlan,
    Existing,
    FetchPlan,
    InstallPlan,
    NetworkPlan,
    PackSource,
    Paths,
    PayloadFile,
    Staging,
    StagingPlace,
)
from installer_core.treeinfo import TreeInfo
from partitioning import mkfs, planner
from partitioning.model import DiskFacts, MiB, Options, Plan, Preserve, Use
from partitioning.model import Mode as LayoutMode

MIN_HOST_MEMORY_MIB = 1024  # dom0 (up to 2 GiB on larger hosts) and room for one small guest
RAM_MARGIN = 256 * MiB  # left free when the payload is staged in RAM
STAGING_DIR = "netinstall-staging"  # an upgrade's payload on the logs partition
NOTHING_WRITTEN = "nothing was written"

_DISKS = {  # mode -> the answer file's element for the run's disk, and what to call it
    Mode.FRESH: ("primary-disk", "the primary disk"),
    Mode.UPGRADE: ("existing-installation", "the disk of the existing installation"),
    Mode.RESTORE: ("backup-disk", "the backup disk"),
}


@dataclass(frozen=True)
class DiskFound:
    """The run's disk as the machine shows it. An upgrade or a restore also has the
    table it keeps (``existing.kept_table``) and what the disk holds."""

    device: Path
    facts: DiskFacts
    multipath: MultipathMap | None = None
    kept: Plan | None = None
    existing: Existing | None = None


@dataclass(frozen=True)
class NetworkFound:
    """The installer's NICs: the one that fetched the answer file, all of them, and the
    iBFT's storage NICs. ``None``: not known (``netinstall plan`` off the machine)."""

    fetched_by: Nic | None = None
    nics: tuple[Nic, ...] | None = None
    storage_names: tuple[str, ...] = ()
    storage_macs: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemoryFound:
    host_mib: int | None = None  # the host's memory as Xen reports it; None outside dom0
    available: int | None = None  # bytes the installer may use (MemAvailable); None: unknown


@dataclass(frozen=True)
class PayloadFound:
    treeinfo: TreeInfo | None
    files: tuple[PayloadFile, ...]
    unread: str | None = None  # why .treeinfo was not read (``netinstall plan`` only)


PayloadLearner = Callable[[str], PayloadFound]  # repository URL -> .treeinfo and sizes


def disk_element(answer: AnswerFile) -> tuple[Disk, str]:
    """The disk the run works on and what to call it: the primary disk of a fresh
    install, the existing installation's disk (upgrade), the backup disk (restore)."""
    element, name = _DISKS[answer.mode]
    primary = answer.primary_disk.disk if answer.primary_disk else None
    disk = {
        Mode.FRESH: primary,
        Mode.UPGRADE: answer.existing_installation,
        Mode.RESTORE: answer.backup_disk,
    }[answer.mode]
    if disk is None:
        raise InputError(f"the answer file names no <{element}>")
    return disk, name


def check_options(args: BootArgs, answer: AnswerFile) -> None:
    """Refuse what the boot arguments and the answer file ask for together but cannot be."""
    disk, name = disk_element(answer)
    fresh = answer.mode is Mode.FRESH
    if args.device_mapper_multipath and not fresh:
        raise InputError(
            f"{name} {disk.spec!r}: upgrading or restoring an installation on a multipath "
            "device is not supported yet (boot the installer without device_mapper_multipath "
            f"to work through one path); {NOTHING_WRITTEN}"
        )
    if disk.kind is not DiskKind.LOCAL and not fresh:
        raise InputError(
            f"{_DISKS[answer.mode][0]} {disk.spec!r}: upgrading or restoring an installation "
            f"on an iSCSI disk is not supported yet; {NOTHING_WRITTEN}"
        )
    if disk.kind is not DiskKind.LOCAL and not args.use_ibft:
        raise InputError(
            f"primary-disk {disk.spec!r}: an iSCSI disk needs use_ibft on the installer command "
            f"line (the installed system logs in from the firmware's iBFT at boot); "
            f"{NOTHING_WRITTEN}"
        )
    for guest in answer.guest_disks if fresh else ():
        if guest.path is None:
            raise InputError(f"guest-disk {guest.spec!r}: iSCSI guest disks are not supported yet")


def layout_options(args: BootArgs, firmware: Firmware, answer: AnswerFile) -> Options:
    """Partitioning's options for a fresh install: firmware, boot arguments, answer file."""
    primary = answer.primary_disk
    return Options(
        firmware=firmware,
        disable_gpt=args.disable_gpt,
        guest_storage=primary.guest_storage if primary else True,
        preserve_first_partition=Preserve(
            primary.preserve_first_partition.value if primary else Preserve.IF_UTILITY.value
        ),
        zap_utility_partitions=answer.zap_utility_partitions,
        mode=LayoutMode.FRESH,
    )


def plan_disk(args: BootArgs, firmware: Firmware, answer: AnswerFile, found: DiskFound) -> DiskPlan:
    """The fresh layout from partitioning's planner, or the table an upgrade keeps."""
    _, name = disk_element(answer)
    if answer.mode is not Mode.FRESH:
        if found.kept is None or found.existing is None:
            raise InputError(f"{name} {found.device} holds no installation that was read")
        partitions = _partitions(found.kept, found.device, kept=True)
        return DiskPlan(found.device, name, found.facts, found.kept, partitions, found.multipath)
    if found.facts.size < planner.MIN_ANY:
        raise PlanError(
            f"{name} {found.device} has {planner.human(found.facts.size)}; netinstall needs at "
            f"least {planner.human(planner.MIN_ANY)}"
        )
    table = planner.plan(found.facts, layout_options(args, firmware, answer))
    partitions = _partitions(table, found.device, kept=False)
    return DiskPlan(found.device, name, found.facts, table, partitions, found.multipath)


def _partitions(table: Plan, device: Path, *, kept: bool) -> dict[Use, Path]:
    return {
        p.use: Path(mkfs.partition_device(str(device), p.number))
        for p in table.partitions
        if kept or not p.keep
    }


def check_memory(memory: MemoryFound) -> None:
    if memory.host_mib is not None and memory.host_mib < MIN_HOST_MEMORY_MIB:
        raise InputError(
            f"the host has {memory.host_mib} MiB of memory (xl info); netinstall needs at "
            f"least {MIN_HOST_MEMORY_MIB} MiB"
        )


def _storage_refusal(
    what: str, network: NetworkFound, names: tuple[str, ...], macs: tuple[str, ...]
) -> None:
    """InputError when one of ``names`` or ``macs`` is an iBFT storage NIC."""
    for mac in macs:
        if mac.lower() in network.storage_macs:
            raise InputError(
                f"{what} hwaddr={mac} is the iSCSI storage NIC named by the iBFT; it is "
                f"reserved for storage: use another NIC; {NOTHING_WRITTEN}"
            )
    bases = {nic.split(".", 1)[0] for nic in network.storage_names}
    for name in names:
        if name.split(".", 1)[0] in bases:
            raise InputError(
                f"{what} {name} is the iSCSI storage NIC named by the iBFT; it is reserved "
                f"for storage: use another NIC; {NOTHING_WRITTEN}"
            )


def plan_network(args: BootArgs, answer: AnswerFile, network: NetworkFound) -> NetworkPlan:
    """The management NIC: the answer file's, else the one that fetched the answer file;
    never an iBFT storage NIC. An upgrade without <admin-interface> keeps its own."""
    admin = answer.admin_interface
    if admin is not None:
        names = (admin.name,) if admin.name else ()
        _storage_refusal("admin-interface", network, names, (admin.hwaddr,) if admin.hwaddr else ())
    fetched = network.fetched_by
    storage = network.storage_names
    keeps_its_own = answer.mode is Mode.RESTORE or (answer.mode is Mode.UPGRADE and admin is None)
    name: str | None = None
    if keeps_its_own:
        pass
    elif admin is not None and admin.name:
        name = admin.name
    elif admin is None and fetched is not None:
        name = fetched.name
    else:  # by MAC: the answer file's hwaddr, else the boot NIC's
        mac = admin.hwaddr if admin is not None else args.bootif
        if network.nics is not None:
            name = next((n.name for n in network.nics if mac and n.mac == mac.lower()), None)
            if name is None:
                raise InputError(
                    f"admin-interface: no network interface has MAC {mac}"
                    if mac
                    else "the management interface is unknown: give <admin-interface name=...>"
                )
    if name is not None:
        _storage_refusal("the management interface", network, (name,), ())
    own = next((n.mac for n in network.nics or () if n.name == name), None)
    host_mac = (fetched.mac if fetched else None) or args.bootif or own
    return NetworkPlan(name, host_mac, admin, storage)


def plan_bootloader(firmware: Firmware, answer: AnswerFile, disk: DiskPlan) -> BootloaderPlan:
    esp = disk.table.by_use(Use.ESP)
    if firmware is Firmware.UEFI and esp is None:  # partitioning and existing refuse it first
        raise PlanError(f"{disk.what} {disk.device}: a UEFI install needs an EFI system partition")
    return BootloaderPlan(
        firmware=firmware,
        disk=disk.device,
        esp_number=esp.number if esp is not None and firmware is Firmware.UEFI else None,
        write_boot_entry=answer.bootloader.write_boot_entry,
        location=answer.bootloader.location,
    )


def plan_sources(args: BootArgs, answer: AnswerFile) -> tuple[str, tuple[PackSource, ...]]:
    """The install repository and the pack sources: its own list, then each driver source."""
    if not answer.sources:
        raise InputError("the answer file names no <source> for the install repository")
    repository = repository_url(answer.sources[0], args.server)
    packs = [PackSource(split_pin(repository)[0], optional_list=True)]  # packs: XS-PACKAGES
    packs += [
        PackSource(split_pin(repository_url(source, args.server))[0], optional_list=False)
        for source in answer.driver_sources
    ]
    return repository, tuple(packs)


def plan_staging(
    mode: Mode, disk: DiskPlan, size: int, memory: MemoryFound, paths: Paths
) -> Staging:
    """RAM when the payload fits with 256 MiB to spare; else the new backup partition
    (fresh) or a directory of its own on the logs partition (upgrade), SPEC §7."""
    mib = size // MiB
    if memory.available is None:
        known = f"the payload has {mib} MiB; " if size else ""
        return Staging(
            StagingPlace.RAM,
            paths.work / "payload",
            reason=f"{known}the installer's free memory is not known here",
        )
    if memory.available > size + RAM_MARGIN:
        return Staging(
            StagingPlace.RAM,
            paths.work / "payload",
            reason=f"the payload ({mib} MiB) fits in RAM ({memory.available // MiB} MiB free)",
        )
    reason = (
        f"the payload ({mib} MiB) does not fit in RAM ({memory.available // MiB} MiB available, "
        f"{RAM_MARGIN // MiB} MiB kept free)"
    )
    mount = paths.work / "staging-disk"
    if mode is Mode.UPGRADE:
        device = disk.partitions.get(Use.LOGS)
        if device is None:
            raise InputError(
                f"the payload needs {mib} MiB, more than fits in RAM, and the "
                f"{disk.table.layout.value} layout has no logs partition to stage it on; "
                "give the machine more memory"
            )
        return Staging(StagingPlace.LOGS, mount / STAGING_DIR, device, mount, reason)
    backup = disk.table.by_use(Use.BACKUP)
    if backup is None or Use.BACKUP not in disk.partitions:
        raise InputError(
            f"the payload needs {mib} MiB, more than fits in RAM, and the "
            f"{disk.table.layout.value} layout makes no backup partition to stage it on"
        )
    if backup.size < size:
        raise InputError(
            f"the payload needs {mib} MiB, more than fits in RAM and more than the new "
            f"backup partition's {backup.size // MiB} MiB; give the machine more memory"
        )
    return Staging(
        StagingPlace.BACKUP, mount / "payload", disk.partitions[Use.BACKUP], mount, reason
    )


def make_plan(
    args: BootArgs,
    firmware: Firmware,
    answer: AnswerFile,
    *,
    disk: DiskFound,
    network: NetworkFound,
    memory: MemoryFound,
    learn_payload: PayloadLearner,
    paths: Paths,
) -> InstallPlan:
    """The run's plan, checked whole; ``learn_payload`` is asked last."""
    check_options(args, answer)
    disk_plan = plan_disk(args, firmware, answer, disk)
    check_memory(memory)
    network_plan = plan_network(args, answer, network)
    bootloader = plan_bootloader(firmware, answer, disk_plan)
    notes = list(disk_plan.table.notes)
    fetch = staging = None
    if answer.mode is not Mode.RESTORE:
        repository, packs = plan_sources(args, answer)
        payload = learn_payload(repository)
        fetch = FetchPlan(repository, payload.treeinfo, payload.files, packs, payload.unread)
        staging = plan_staging(answer.mode, disk_plan, fetch.size, memory, paths)
        if staging.place is StagingPlace.BACKUP:
            notes.append(
                "the disk is partitioned before the download: its old contents are lost "
                "even if the payload then fails to verify"
            )
    return InstallPlan(
        mode=answer.mode,
        args=args,
        firmware=firmware,
        answer=answer,
        disk=disk_plan,
        network=network_plan,
        bootloader=bootloader,
        fetch=fetch,
        staging=staging,
        existing=disk.existing,
        paths=paths,
        host_memory_mib=memory.host_mib,
        notes=tuple(notes),
    )
