"""Read a disk's partition table: an image file or a block device (SPEC §6).

pyparted gives the label, the disk's size and sector size, and every
partition's number, geometry and GPT name. libparted 3.5 (what pyparted is
built against here) cannot report a GPT type GUID or a DOS type id, so those
two come from the table's own bytes: the GPT entry array and the MBR (with its
chain of extended boot records). Nothing here writes to the disk.
"""

from __future__ import annotations

import os
import stat
import struct
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import parted

from common.errors import NetinstallError, PlanError
from partitioning.detect import detect_installation
from partitioning.model import DiskFacts, ExistingPartition, Label

# pyparted's exceptions share no base class but Exception.
PARTED_ERRORS: tuple[type[Exception], ...] = (
    parted.AlignmentException,
    parted.ConstraintException,
    parted.CreateException,
    parted.DeviceException,
    parted.DiskException,
    parted.DiskLabelException,
    parted.GeometryException,
    parted.IOException,
    parted.PartedException,
    parted.PartitionException,
    parted.UnknownDeviceException,
)

_LABELS = {"gpt": Label.GPT, "msdos": Label.DOS}
_GPT_SIGNATURE = b"EFI PART"
_EXTENDED_TYPES = (0x05, 0x0F, 0x85)
_MAX_LOGICAL = 256  # a bound on the extended boot record chain, against loops


@dataclass(frozen=True)
class DiskTable:
    """What a disk holds: its label (None: no table we handle), size and partitions."""

    label: Label | None
    size: int  # bytes
    sector_size: int
    partitions: tuple[ExistingPartition, ...]


def check_target(target: str | Path) -> Path:
    """``target`` as a Path if it is a regular file or a block device; else a ``PlanError``."""
    path = Path(target)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise PlanError(f"{path} does not exist") from None
    except OSError as exc:
        raise PlanError(f"{path} cannot be read: {exc.strerror}") from exc
    if stat.S_ISDIR(mode):
        raise PlanError(f"{path} is a directory, not a disk or an image file")
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise PlanError(f"{path} is neither a block device nor an image file")
    if not os.access(path, os.R_OK):
        raise PlanError(f"{path} cannot be read (permission denied)")
    return path


def is_block_device(path: Path) -> bool:
    """True for a block device, False for an image file."""
    return stat.S_ISBLK(path.stat().st_mode)


@contextmanager
def open_device(path: Path) -> Iterator[Any]:
    """A pyparted Device for ``path``, dropped from libparted's cache afterwards.

    libparted caches devices by path with the size it saw first; dropping the
    entry makes the next read see the disk as it is then.
    """
    try:
        device = parted.getDevice(str(path))
    except PARTED_ERRORS as exc:
        raise NetinstallError(f"{path} cannot be opened as a disk: {exc}") from exc
    try:
        yield device
    finally:
        device.removeFromCache()


def read_disk(device: Any) -> Any | None:
    """The pyparted Disk on ``device``, or None when it holds no partition table."""
    try:
        return parted.newDisk(device)
    except parted.DiskLabelException:
        return None
    except parted.DiskException as exc:
        if "unrecognised disk label" in str(exc):
            return None
        raise NetinstallError(
            f"the partition table of {device.path} cannot be read: {exc}"
        ) from exc
    except PARTED_ERRORS as exc:
        raise NetinstallError(
            f"the partition table of {device.path} cannot be read: {exc}"
        ) from exc


def _pread(path: Path, offset: int, length: int) -> bytes:
    """``length`` bytes of ``path`` from ``offset`` (fewer only at the end)."""
    with path.open("rb") as stream:
        stream.seek(offset)
        return stream.read(length)


def _gpt_header(path: Path, sector: int, sectors: int) -> bytes | None:
    """The primary GPT header, or the backup one when the primary is unusable."""
    for lba in (1, sectors - 1):
        header = _pread(path, lba * sector, sector)
        if header[:8] == _GPT_SIGNATURE:
            return header
    return None


def gpt_type_guids(path: Path, sector: int, sectors: int) -> dict[int, str]:
    """Partition number -> type GUID (upper case), read from the GPT entry array."""
    header = _gpt_header(path, sector, sectors)
    if header is None:
        return {}
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    if entry_size < 128 or count * entry_size > 1024 * 1024:
        return {}
    array = _pread(path, entries_lba * sector, count * entry_size)
    guids: dict[int, str] = {}
    for index in range(min(count, len(array) // entry_size)):
        raw = array[index * entry_size : index * entry_size + 16]
        if raw != bytes(16):
            guids[index + 1] = str(uuid.UUID(bytes_le=raw)).upper()
    return guids


def _mbr_entries(block: bytes) -> list[tuple[int, int]]:
    """The four (type id, start sector) entries of an MBR or extended boot record."""
    entries = []
    for slot in range(4):
        type_id = block[446 + 16 * slot + 4]
        (start,) = struct.unpack_from("<I", block, 446 + 16 * slot + 8)
        entries.append((type_id, start))
    return entries


def dos_type_ids(path: Path, sector: int) -> dict[int, int]:
    """Partition number -> DOS type id, from the MBR and the extended boot records."""
    ids: dict[int, int] = {}
    extended = None
    for slot, (type_id, start) in enumerate(_mbr_entries(_pread(path, 0, 512))):
        if type_id:
            ids[slot + 1] = type_id
        if type_id in _EXTENDED_TYPES:
            extended = start
    if extended is None:
        return ids
    ebr, number = extended, 5
    for _ in range(_MAX_LOGICAL):
        block = _pread(path, ebr * sector, 512)
        if len(block) < 512 or block[510:512] != b"\x55\xaa":
            break
        (logical, _), (link_type, link_start) = _mbr_entries(block)[:2]
        if logical:
            ids[number] = logical
            number += 1
        if link_type not in _EXTENDED_TYPES or link_start == 0:
            break
        ebr = extended + link_start
    return ids


def _partitions(path: Path, disk: Any, label: Label, sector: int) -> tuple[ExistingPartition, ...]:
    """Every partition of ``disk`` (freespace and metadata left out), in number order."""
    sectors = int(disk.device.length)
    guids = gpt_type_guids(path, sector, sectors) if label is Label.GPT else {}
    ids = dos_type_ids(path, sector) if label is Label.DOS else {}
    found = []
    for part in disk.partitions:
        number = int(part.number)
        geometry = part.geometry
        found.append(
            ExistingPartition(
                number=number,
                start=int(geometry.start) * sector,
                size=int(geometry.length) * sector,
                gpt_type=guids.get(number),
                dos_type=ids.get(number),
                name=str(part.name or "") if label is Label.GPT else "",
            )
        )
    return tuple(sorted(found, key=lambda p: p.number))


def read_partitions(target: str | Path) -> DiskTable:
    """The label, size, sector size and partitions of an image file or a block device.

    A disk without a table, or with a label other than GPT or DOS, reads as
    ``label=None`` with no partitions.
    """
    path = check_target(target)
    with open_device(path) as device:
        sector = int(device.sectorSize)
        size = int(device.length) * sector
        if size == 0:
            raise PlanError(f"{path} is empty")
        disk = read_disk(device)
        label = _LABELS.get(str(disk.type)) if disk is not None else None
        if disk is None or label is None:
            return DiskTable(None, size, sector, ())
        try:
            partitions = _partitions(path, disk, label, sector)
        except OSError as exc:
            raise NetinstallError(f"{path} cannot be read: {exc.strerror}") from exc
    return DiskTable(label, size, sector, partitions)


def read_facts(target: str | Path, sr_has_vms: bool) -> DiskFacts:
    """The planner's ``DiskFacts`` for ``target``, with the installation found on it."""
    table = read_partitions(target)
    return DiskFacts(
        size=table.size,
        sector_size=table.sector_size,
        label=table.label,
        partitions=table.partitions,
        installation=detect_installation(table.label, table.partitions),
        sr_has_vms=sr_has_vms,
    )
