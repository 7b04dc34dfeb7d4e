"""Disk facts + firmware + options -> a partition plan, or a refusal (SPEC §6). Pure.

Every refusal is a ``PlanError`` raised before anything is written: the caller
plans first and writes only a plan it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from common.errors import PlanError
from common.firmware import Firmware
from partitioning.model import (
    BASIC_DATA,
    BIOS_BOOT,
    DELL_UTILITY_NAME,
    DOS_LINUX,
    DOS_LVM,
    DOS_UTILITY,
    EFI_SYSTEM,
    LINUX_LVM,
    LINUX_SWAP,
    DiskFacts,
    ExistingPartition,
    Filesystem,
    GiB,
    Installation,
    Label,
    Layout,
    MiB,
    Mode,
    Options,
    Partition,
    Plan,
    Preserve,
    TiB,
    Use,
)

ALIGN = MiB
MIN_GPT = 46 * GiB
MIN_ANY = 12 * GiB
GPT_BACKUP_SECTORS = 33  # backup header + 32 sectors of entries at the end of the disk
DOS_MAX_SECTORS = 2**32
OLD_ROOT_SHRUNK = 3584 * MiB


def human(size: int) -> str:
    """Bytes as the largest binary unit that keeps one decimal: 46 GiB, 3.5 GiB, 512 MiB."""
    for unit, scale in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def _align_up(value: int) -> int:
    return -(-value // ALIGN) * ALIGN


def _align_down(value: int) -> int:
    return value // ALIGN * ALIGN


@dataclass(frozen=True)
class _Slot:
    """A partition to lay out: its number before any shift, use and fixed size (None: rest)."""

    number: int
    use: Use
    size: int | None


_NEW_GPT = (  # SPEC §6, in on-disk order
    _Slot(5, Use.LOGS, 4 * GiB),
    _Slot(2, Use.BACKUP, 18 * GiB),
    _Slot(1, Use.ROOT, 18 * GiB),
    _Slot(4, Use.ESP, 512 * MiB),  # BIOS boot on legacy BIOS
    _Slot(6, Use.SWAP, 1 * GiB),
    _Slot(3, Use.SR, None),
)
_DOS = (
    _Slot(1, Use.ROOT, 4 * GiB),
    _Slot(2, Use.BACKUP, 4 * GiB),
    _Slot(3, Use.SR, None),
)


def _describe(use: Use, label: Label, firmware: Firmware, number: int) -> Partition:
    """A partition's types, names, filesystem and mount point; geometry filled in later."""
    if use is Use.ESP and firmware is Firmware.BIOS:
        use = Use.BIOS_BOOT
    gpt = label is Label.GPT
    table: dict[Use, tuple[str, int, str, Filesystem, str | None, str | None]] = {
        Use.ROOT: (BASIC_DATA, DOS_LINUX, "root", Filesystem.EXT4, "root", "/"),
        Use.BACKUP: (BASIC_DATA, DOS_LINUX, "backup", Filesystem.EXT4, "backup", None),
        Use.LOGS: (BASIC_DATA, DOS_LINUX, "logs", Filesystem.EXT4, "logs", "/var/log"),
        Use.ESP: (EFI_SYSTEM, 0xEF, "esp", Filesystem.VFAT, "ESP", "/boot/efi"),
        Use.BIOS_BOOT: (BIOS_BOOT, 0, "bios-boot", Filesystem.NONE, None, None),
        Use.SWAP: (LINUX_SWAP, 0x82, "swap", Filesystem.SWAP, "swap", None),
        Use.SR: (LINUX_LVM, DOS_LVM, "sr", Filesystem.NONE, None, None),
    }
    guid, dos, name, fs, fs_label, mount = table[use]
    return Partition(
        number=number,
        start=0,
        size=0,
        use=use,
        gpt_type=guid if gpt else None,
        dos_type=None if gpt else dos,
        name=name if gpt else "",
        filesystem=fs,
        fs_label=fs_label,
        mount_point=mount,
    )


def _kept_first(facts: DiskFacts, options: Options) -> ExistingPartition | None:
    """Partition 1 if it is to be kept; refuses utility partitions we cannot keep."""
    utilities = [p for p in facts.partitions if p.is_utility]
    if options.zap_utility_partitions:
        if options.preserve_first_partition is Preserve.TRUE:
            raise PlanError(
                "zap-utility-partitions contradicts preserve-first-partition=true; keep one"
            )
        return None
    if len(utilities) > 1:
        numbers = ", ".join(str(p.number) for p in utilities)
        raise PlanError(
            f"the disk has {len(utilities)} utility partitions ({numbers}); at most one, "
            "as partition 1, can be kept (or set zap-utility-partitions)"
        )
    if utilities and utilities[0].number != 1:
        raise PlanError(
            f"the utility partition is partition {utilities[0].number}; it can only be kept "
            "as partition 1 (or set zap-utility-partitions)"
        )
    first = next((p for p in facts.partitions if p.number == 1), None)
    if first is None or options.preserve_first_partition is Preserve.FALSE:
        return None
    if options.preserve_first_partition is Preserve.TRUE or first.is_utility:
        return first
    return None


def _kept_partition(part: ExistingPartition, label: Label, sector: int) -> Partition:
    """Partition 1 kept where it is, typed for the label the plan writes."""
    utility = part.is_utility
    if label is Label.GPT and part.start < 34 * sector:
        raise PlanError(
            f"partition 1 starts at sector {part.start // sector}, inside the GPT header "
            "area; it cannot be kept on a GPT disk"
        )
    if label is Label.GPT:
        gpt_type = part.gpt_type or (EFI_SYSTEM if utility else BASIC_DATA)
        name = part.name or (DELL_UTILITY_NAME if utility else "kept")
        return Partition(
            1,
            part.start,
            part.size,
            Use.UTILITY if utility else Use.KEPT,
            gpt_type=gpt_type,
            name=name,
            keep=True,
        )
    dos_type = part.dos_type or (DOS_UTILITY if utility else DOS_LINUX)
    return Partition(
        1, part.start, part.size, Use.UTILITY if utility else Use.KEPT, dos_type=dos_type, keep=True
    )


def _usable_end(size: int, sector: int, label: Label) -> int:
    if label is Label.GPT:
        return _align_down(size - GPT_BACKUP_SECTORS * sector)
    return _align_down(min(size, DOS_MAX_SECTORS * sector))


def _lay_out(
    slots: tuple[_Slot, ...],
    facts: DiskFacts,
    options: Options,
    label: Label,
    kept: ExistingPartition | None,
) -> tuple[Partition, ...]:
    sector = facts.sector_size
    shift = 1 if kept else 0
    parts: list[Partition] = [_kept_partition(kept, label, sector)] if kept else []
    position = _align_up(kept.end) if kept else ALIGN
    end = _usable_end(facts.size, sector, label)
    fixed = sum(s.size or 0 for s in slots)
    if position + fixed > end:
        raise PlanError(
            f"the {label.value.upper()} layout needs {human(fixed)} after "
            f"{'the kept partition 1' if kept else 'the first MiB'}; this disk has only "
            f"{human(max(end - position, 0))} there"
        )
    for slot in slots:
        if slot.use is Use.SR and not options.guest_storage:
            continue
        size = slot.size if slot.size is not None else end - position
        if size <= 0:
            raise PlanError("no space is left for the local SR; use guest-storage=no")
        part = _describe(slot.use, label, options.firmware, slot.number + shift)
        parts.append(replace(part, start=position, size=size))
        position += size
    return tuple(parts)


def _check_size_and_label(facts: DiskFacts, options: Options, label: Label) -> None:
    size = facts.size
    if label is Label.DOS and options.firmware is Firmware.UEFI:
        raise PlanError("UEFI firmware boots only from GPT disks; remove disable-gpt")
    if size < MIN_ANY:
        raise PlanError(f"the disk has {human(size)}; netinstall needs at least {human(MIN_ANY)}")
    if label is Label.GPT and size < MIN_GPT:
        raise PlanError(
            f"the GPT layout needs a disk of at least {human(MIN_GPT)}; this disk has "
            f"{human(size)}; add disable-gpt to use the legacy DOS layout (12 GiB or more)"
        )
    if label is Label.DOS and size > DOS_MAX_SECTORS * facts.sector_size:
        limit = human(DOS_MAX_SECTORS * facts.sector_size)
        raise PlanError(
            f"a DOS partition table cannot address more than {limit}; this disk has "
            f"{human(size)}; remove disable-gpt to use GPT"
        )


def _fresh(facts: DiskFacts, options: Options) -> Plan:
    label = Label.DOS if options.disable_gpt else Label.GPT
    _check_size_and_label(facts, options, label)
    kept = _kept_first(facts, options)
    slots, layout = (_DOS, Layout.DOS) if label is Label.DOS else (_NEW_GPT, Layout.NEW_GPT)
    parts = _lay_out(slots, facts, options, label, kept)
    notes = [f"keeps partition 1 ({human(kept.size)}) where it is"] if kept else []
    if facts.installation is not None:
        notes.append(f"replaces the installation found ({facts.installation.layout.value})")
    return Plan(label, layout, facts.size, facts.sector_size, parts, tuple(notes))


def _unchanged(facts: DiskFacts, install: Installation, note: str) -> Plan:
    """An upgrade that keeps the table exactly as it is."""
    label = Label.DOS if install.layout is Layout.DOS else Label.GPT
    roles = {
        install.root: Use.ROOT,
        install.backup: Use.BACKUP,
        install.sr: Use.SR,
        install.boot: Use.ESP,
        install.logs: Use.LOGS,
        install.swap: Use.SWAP,
    }
    parts = []
    for existing in sorted(facts.partitions, key=lambda p: p.start):
        use = roles.get(existing.number) or (Use.UTILITY if existing.is_utility else Use.KEPT)
        if use is Use.ESP and existing.gpt_type == BIOS_BOOT:
            use = Use.BIOS_BOOT
        parts.append(
            Partition(
                existing.number,
                existing.start,
                existing.size,
                use,
                gpt_type=existing.gpt_type,
                dos_type=existing.dos_type,
                name=existing.name,
                keep=True,
            )
        )
    return Plan(label, install.layout, facts.size, facts.sector_size, tuple(parts), (note,))


def _old_gpt_with_boot(facts: DiskFacts, options: Options, install: Installation) -> Plan:
    """Old GPT upgraded in place: root shrinks to 3584 MiB, boot partition right after it."""
    unchanged = _unchanged(facts, install, "")
    root = unchanged.by_number(install.root)
    if root.size < OLD_ROOT_SHRUNK + 512 * MiB:
        raise PlanError(
            f"the root partition has {human(root.size)}; the upgrade needs 4 GiB to make room "
            "for the boot partition"
        )
    boot_number = 4 + (install.root - 1)
    new_root = replace(
        _describe(Use.ROOT, Label.GPT, options.firmware, install.root),
        start=root.start,
        size=OLD_ROOT_SHRUNK,
    )
    boot = replace(
        _describe(Use.ESP, Label.GPT, options.firmware, boot_number),
        start=root.start + OLD_ROOT_SHRUNK,
        size=root.size - OLD_ROOT_SHRUNK,
    )
    parts: list[Partition] = []
    for part in unchanged.partitions:
        parts.extend([new_root, boot] if part.number == install.root else [part])
    return Plan(
        Label.GPT,
        Layout.OLD_GPT_BOOT,
        facts.size,
        facts.sector_size,
        tuple(parts),
        ("root shrinks to 3584 MiB; the boot partition takes the space after it",),
    )


def _upgrade(facts: DiskFacts, options: Options) -> Plan:
    install = facts.installation
    if install is None:
        raise PlanError("the disk holds no installation to upgrade; use a fresh install")
    if install.layout is Layout.DOS:
        _check_size_and_label(facts, options, Label.DOS)
        return _unchanged(facts, install, "DOS layout: the table stays as it is")
    if install.layout in (Layout.NEW_GPT, Layout.OLD_GPT_BOOT):
        return _unchanged(facts, install, f"{install.layout.value}: the table stays as it is")
    if facts.sr_has_vms or facts.size < MIN_GPT:
        return _old_gpt_with_boot(facts, options, install)
    plan = _fresh(facts, replace(options, disable_gpt=False, mode=Mode.FRESH))
    return replace(
        plan,
        notes=(*plan.notes, "old GPT, SR without VMs, disk of 46 GiB or more: new GPT layout"),
    )


def plan(facts: DiskFacts, options: Options) -> Plan:
    """The partition plan for this disk, or a ``PlanError`` saying why there is none."""
    if facts.sector_size <= 0 or ALIGN % facts.sector_size:
        raise PlanError(f"sector size {facts.sector_size} is not supported")
    if options.mode is Mode.UPGRADE:
        return _upgrade(facts, options)
    return _fresh(facts, options)
