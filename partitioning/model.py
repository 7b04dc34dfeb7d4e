"""Partition plans and the disk facts they are made from (SPEC §6). Values only."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from common.firmware import Firmware

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


class Label(enum.StrEnum):
    GPT = "gpt"
    DOS = "dos"


class Layout(enum.StrEnum):
    NEW_GPT = "new-gpt"  # 5 logs, 2 backup, 1 root, 4 boot, 6 swap, 3 SR (XenServer 7)
    OLD_GPT = "old-gpt"  # 1 root 4 GiB, 2 backup 4 GiB, 3 SR (XenServer 6.x)
    OLD_GPT_BOOT = "old-gpt-boot"  # old GPT upgraded in place: root 3584 MiB, 4 boot after it
    DOS = "dos"  # 1 root 4 GiB, 2 backup 4 GiB, 3 SR (small disks, disable-gpt)


class Mode(enum.StrEnum):
    FRESH = "fresh"
    UPGRADE = "upgrade"


class Use(enum.StrEnum):
    ROOT = "root"
    BACKUP = "backup"
    LOGS = "logs"
    ESP = "esp"  # EFI system partition (UEFI)
    BIOS_BOOT = "bios-boot"  # GRUB's core image on GPT (legacy BIOS)
    SWAP = "swap"
    SR = "sr"
    UTILITY = "utility"  # a vendor utility partition, kept
    KEPT = "kept"  # partition 1 kept because preserve-first-partition=true


class Filesystem(enum.StrEnum):
    NONE = "none"
    EXT4 = "ext4"
    VFAT = "vfat"
    SWAP = "swap"


class Preserve(enum.StrEnum):
    TRUE = "true"
    FALSE = "false"
    IF_UTILITY = "if-utility"


# GPT partition type GUIDs (SPEC §6) and DOS partition types.
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
LINUX_SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
LINUX_LVM = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
EFI_SYSTEM = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
DOS_LINUX = 0x83
DOS_LVM = 0x8E
DOS_UTILITY = 0xDE
DELL_UTILITY_NAME = "DELLUTILITY"


@dataclass(frozen=True)
class Partition:
    """One partition of a plan. ``start`` and ``size`` are in bytes."""

    number: int
    start: int
    size: int
    use: Use
    gpt_type: str | None = None  # GPT type GUID, upper case
    dos_type: int | None = None
    name: str = ""  # GPT partition name
    filesystem: Filesystem = Filesystem.NONE
    fs_label: str | None = None
    mount_point: str | None = None
    keep: bool = False  # an existing partition left exactly as it is

    @property
    def end(self) -> int:
        """One past the last byte."""
        return self.start + self.size


@dataclass(frozen=True)
class Plan:
    label: Label
    layout: Layout
    disk_size: int
    sector_size: int
    partitions: tuple[Partition, ...]  # in on-disk order
    notes: tuple[str, ...] = ()

    def by_number(self, number: int) -> Partition:
        for partition in self.partitions:
            if partition.number == number:
                return partition
        raise KeyError(number)

    def by_use(self, use: Use) -> Partition | None:
        for partition in self.partitions:
            if partition.use is use:
                return partition
        return None


@dataclass(frozen=True)
class ExistingPartition:
    """A partition found on the disk. ``start`` and ``size`` in bytes."""

    number: int
    start: int
    size: int
    gpt_type: str | None = None  # upper case
    dos_type: int | None = None
    name: str = ""

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def is_utility(self) -> bool:
        return self.dos_type == DOS_UTILITY or (
            self.gpt_type == EFI_SYSTEM and self.name.upper() == DELL_UTILITY_NAME
        )


@dataclass(frozen=True)
class Installation:
    """An installation found on a disk: its layout and which partition holds what."""

    layout: Layout
    root: int
    backup: int
    sr: int | None = None
    boot: int | None = None
    logs: int | None = None
    swap: int | None = None
    version: str | None = None


@dataclass(frozen=True)
class DiskFacts:
    size: int  # bytes
    sector_size: int = 512
    label: Label | None = None  # None: no partition table
    partitions: tuple[ExistingPartition, ...] = ()
    installation: Installation | None = None
    sr_has_vms: bool = False


@dataclass(frozen=True)
class Options:
    firmware: Firmware = Firmware.BIOS
    disable_gpt: bool = False
    guest_storage: bool = True
    preserve_first_partition: Preserve = Preserve.IF_UTILITY
    zap_utility_partitions: bool = False
    mode: Mode = Mode.FRESH
