"""Write a partition plan to a disk in one commit, verify it, put the old table back on failure.

Refuse what cannot work (nothing written), keep the first and last MiB of the
disk (MBR, GPT headers and entries), build the new table in memory with
pyparted, commit it once, read it back with fresh objects and compare it with
the plan. If the commit or the comparison fails the kept bytes go back.

Partitions marked ``keep`` stay where they are: when the disk already has the
plan's label the table is edited (only the other partitions are removed), so
a kept partition keeps its type, GUID, name and attributes; on a label change
it is recreated with the same geometry. No partition's contents are written.

libparted 3.5 cannot set a GPT type GUID or a DOS type id directly, so types
are set with the partition flags that imply them (``msftdata`` gives basic
data, ``esp`` the EFI system partition, ``bios_grub`` BIOS boot, ``swap`` and
``lvm`` theirs). A DOS type without a flag (0xDE, a utility partition moved
from a GPT disk) is written into its MBR entry right after the commit, inside
the bytes that a restore puts back.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import parted

from common.errors import CommandError, NetinstallError, PlanError
from common.process import run
from partitioning.facts import (
    PARTED_ERRORS,
    DiskTable,
    check_target,
    is_block_device,
    open_device,
    read_disk,
    read_partitions,
)
from partitioning.model import (
    BASIC_DATA,
    BIOS_BOOT,
    DOS_LINUX,
    DOS_LVM,
    EFI_SYSTEM,
    LINUX_LVM,
    LINUX_SWAP,
    DiskFacts,
    Label,
    MiB,
    Partition,
    Plan,
)

log = logging.getLogger(__name__)

SAVED_BYTES = MiB  # kept from each end of the disk before writing
_PARTED_LABEL = {Label.GPT: "gpt", Label.DOS: "msdos"}
# GPT type GUID -> the libparted flag whose setting gives it.
_GPT_FLAGS = {BASIC_DATA: "msftdata", EFI_SYSTEM: "esp", BIOS_BOOT: "bios_grub"}
_GPT_FLAGS |= {LINUX_SWAP: "swap", LINUX_LVM: "lvm"}
# DOS type id -> the libparted flag whose setting gives it (None: the default, 0x83).
_DOS_FLAGS: dict[int, str | None] = {DOS_LINUX: None, DOS_LVM: "lvm"}


@dataclass(frozen=True)
class SavedTable:
    """The first and the last bytes of a disk, enough to put its partition table back."""

    head: bytes
    tail_offset: int
    tail: bytes


def save_table(path: Path, size: int) -> SavedTable:
    """Read the first and the last ``SAVED_BYTES`` of the disk."""
    tail_offset = max(size - SAVED_BYTES, 0)
    try:
        with path.open("rb") as stream:
            head = stream.read(min(SAVED_BYTES, size))
            stream.seek(tail_offset)
            tail = stream.read(size - tail_offset)
    except OSError as exc:
        raise NetinstallError(f"{path} cannot be read: {exc.strerror}") from exc
    return SavedTable(head, tail_offset, tail)


def restore_table(path: Path, saved: SavedTable) -> None:
    """Write the saved bytes back where they came from and flush them to the disk."""
    with path.open("r+b") as stream:
        stream.write(saved.head)
        stream.seek(saved.tail_offset)
        stream.write(saved.tail)
        stream.flush()
        os.fsync(stream.fileno())


def _flag(name: str) -> int:
    """libparted's number for the partition flag called ``name``."""
    for number, flag_name in parted.partitionFlag.items():
        if flag_name == name:
            return int(number)
    raise NetinstallError(f"this libparted has no partition flag {name!r}")


def _refuse(plan: Plan, table: DiskTable, path: Path, facts_before: DiskFacts | None) -> None:
    """A ``PlanError`` if the plan does not fit this disk as it is now."""
    if table.size != plan.disk_size:
        raise PlanError(
            f"{path} has {table.size} bytes but the plan is for a disk of {plan.disk_size} bytes"
        )
    if table.sector_size != plan.sector_size:
        raise PlanError(
            f"{path} has {table.sector_size}-byte sectors but the plan is for "
            f"{plan.sector_size}-byte sectors"
        )
    if facts_before is not None and (
        facts_before.label is not table.label or facts_before.partitions != table.partitions
    ):
        raise PlanError(f"the partition table of {path} changed since it was planned; plan again")
    existing = {p.number: p for p in table.partitions}
    for part in plan.partitions:
        if part.start % plan.sector_size or part.size % plan.sector_size or part.size <= 0:
            raise PlanError(f"partition {part.number} is not a whole number of sectors")
        if not part.keep:
            continue
        found = existing.get(part.number)
        if found is None or (found.start, found.size) != (part.start, part.size):
            raise PlanError(
                f"partition {part.number} is to be kept but {path} has no such partition "
                f"at byte {part.start} with {part.size} bytes"
            )


def _geometry(device: Any, part: Partition, sector: int) -> Any:
    """The pyparted Geometry of exactly the plan's sectors for ``part``."""
    return parted.Geometry(device=device, start=part.start // sector, length=part.size // sector)


def _add(disk: Any, geometry: Any, what: str) -> Any:
    """Add a primary partition at exactly ``geometry``; a ``NetinstallError`` if it will not go."""
    part = parted.Partition(disk=disk, type=parted.PARTITION_NORMAL, geometry=geometry)
    try:
        added = disk.addPartition(part, parted.Constraint(exactGeom=geometry))
    except PARTED_ERRORS as exc:
        raise NetinstallError(f"{what} cannot be placed as planned: {exc}") from exc
    if not added:
        raise NetinstallError(f"{what} cannot be placed as planned")
    return part


def _placeholder(disk: Any, device: Any, plan: Plan) -> Any:
    """A one-sector partition outside every planned one, taking the lowest free number.

    libparted numbers a new partition with the lowest free number, so a plan
    that skips a number (no SR: 1, 2, 4, 5, 6) needs that number taken while
    the later ones are added; the placeholders are removed before the commit.
    """
    sector = plan.sector_size
    planned = [(p.start // sector, p.end // sector - 1) for p in plan.partitions]
    for region in disk.getFreeSpaceRegions():
        first, last = int(region.start), int(region.end)
        for candidate in [first, *(end + 1 for _, end in planned)]:
            if not first <= candidate <= last:
                continue
            if any(low <= candidate <= high for low, high in planned):
                continue
            geometry = parted.Geometry(device=device, start=candidate, length=1)
            try:
                return _add(disk, geometry, "a placeholder")
            except NetinstallError:
                continue
    raise NetinstallError("no free sector is left for a placeholder partition")


def _set_gpt_type(part: Any, guid: str, number: int) -> None:
    """Give a GPT partition the type ``guid`` (through its flag, else set_type_uuid)."""
    flag = _GPT_FLAGS.get(guid.upper())
    if flag is not None:
        part.setFlag(_flag(flag))
    elif hasattr(part.getPedPartition(), "set_type_uuid"):
        part.type_uuid = uuid.UUID(guid).bytes
    else:
        raise PlanError(f"partition {number}: GPT type {guid} cannot be set with this libparted")


def _set_types(part: Any, planned: Partition, label: Label, patches: dict[int, int]) -> None:
    """Set the planned type (and GPT name) on a new or recreated partition."""
    if label is Label.GPT:
        if planned.gpt_type is not None:
            _set_gpt_type(part, planned.gpt_type, planned.number)
        part.name = planned.name
        return
    if planned.dos_type is None:
        return
    if planned.dos_type not in _DOS_FLAGS:
        patches[planned.number] = planned.dos_type
        return
    flag = _DOS_FLAGS[planned.dos_type]
    if flag is not None:
        part.setFlag(_flag(flag))


def _retype_kept(part: Any, planned: Partition, before: DiskTable, patches: dict[int, int]) -> None:
    """Change a kept partition's type or name only where the plan differs from the disk."""
    found = next(p for p in before.partitions if p.number == planned.number)
    if before.label is Label.GPT:
        if planned.gpt_type is not None and planned.gpt_type.upper() != found.gpt_type:
            _set_gpt_type(part, planned.gpt_type, planned.number)
        if planned.name != found.name:
            part.name = planned.name
    elif planned.dos_type is not None and planned.dos_type != found.dos_type:
        patches[planned.number] = planned.dos_type


def _start_disk(plan: Plan, device: Any, before: DiskTable) -> tuple[Any, set[int]]:
    """The table to build on and the numbers of the kept partitions already in it.

    With kept partitions and the same label, the disk's own table minus every
    partition not kept; otherwise a fresh, empty table.
    """
    kept = {p.number for p in plan.partitions if p.keep}
    disk = read_disk(device) if kept and before.label is plan.label else None
    if disk is not None:
        for part in sorted(disk.partitions, key=lambda p: -int(p.number)):
            if int(part.number) not in kept:
                disk.deletePartition(part)
    else:
        disk = parted.freshDisk(device, _PARTED_LABEL[plan.label])
        kept = set()
    return disk, kept


def build_table(plan: Plan, device: Any, before: DiskTable) -> tuple[Any, dict[int, int]]:
    """The new table in memory (nothing written) and the DOS type ids still to patch in.

    Partitions are added in number order, since libparted gives each new one
    the lowest free number.
    """
    disk, on_disk = _start_disk(plan, device, before)
    patches: dict[int, int] = {}
    placeholders = []
    last = max((p.number for p in plan.partitions), default=0)
    for number in range(1, last + 1):
        planned = next((p for p in plan.partitions if p.number == number), None)
        current = next((p for p in disk.partitions if int(p.number) == number), None)
        if planned is not None and current is not None and number in on_disk:
            _retype_kept(current, planned, before, patches)
        elif planned is not None:
            part = _add(disk, _geometry(device, planned, plan.sector_size), f"partition {number}")
            if int(part.number) != number:
                raise NetinstallError(f"partition {number} was numbered {part.number} by libparted")
            _set_types(part, planned, plan.label, patches)
        elif current is None:
            placeholders.append(_placeholder(disk, device, plan))
            if int(placeholders[-1].number) != number:
                raise NetinstallError(f"the placeholder for number {number} got another number")
    for part in placeholders:
        disk.deletePartition(part)
    return disk, patches


def _patch_dos_types(path: Path, plan: Plan, patches: dict[int, int]) -> None:
    """Write DOS type ids libparted cannot set into their MBR entries (primaries only)."""
    if not patches:
        return
    with path.open("r+b") as stream:
        mbr = bytearray(stream.read(512))
        for number, type_id in patches.items():
            entry = 446 + 16 * (number - 1)
            start = int.from_bytes(mbr[entry + 8 : entry + 12], "little")
            if number > 4 or start * plan.sector_size != plan.by_number(number).start:
                raise NetinstallError(f"partition {number} is not the MBR entry expected")
            mbr[entry + 4] = type_id
        stream.seek(0)
        stream.write(mbr)
        stream.flush()
        os.fsync(stream.fileno())


def check_table(plan: Plan, table: DiskTable) -> None:
    """A ``NetinstallError`` naming the first difference between the disk's table and the plan."""
    if table.label is not plan.label:
        raise NetinstallError(f"the disk has label {table.label} instead of {plan.label.value}")
    found = {p.number: p for p in table.partitions}
    extra = sorted(set(found) - {p.number for p in plan.partitions})
    if extra:
        raise NetinstallError(f"partition {extra[0]} is on the disk but not in the plan")
    for planned in plan.partitions:
        part = found.get(planned.number)
        if part is None:
            raise NetinstallError(f"partition {planned.number} is missing from the disk")
        expected: list[tuple[str, object, object]] = [
            ("start", planned.start, part.start),
            ("size", planned.size, part.size),
        ]
        if plan.label is Label.GPT:
            expected.append(("name", planned.name, part.name))
            if planned.gpt_type is not None:
                expected.append(("type", planned.gpt_type.upper(), part.gpt_type))
        elif planned.dos_type is not None:
            expected.append(("type", planned.dos_type, part.dos_type))
        for what, want, got in expected:
            if want != got:
                raise NetinstallError(
                    f"partition {planned.number} has {what} {got!r} on the disk "
                    f"but {want!r} in the plan"
                )


def _holds(plan: Plan, table: DiskTable) -> bool:
    """True if the disk's table already is the plan."""
    try:
        check_table(plan, table)
    except NetinstallError:
        return False
    return True


def verify(plan: Plan, path: Path) -> None:
    """Read the table back with fresh objects and compare it with the plan."""
    check_table(plan, read_partitions(path))
    if plan.label is Label.GPT:
        with path.open("rb") as stream:
            mbr = stream.read(512)
        if mbr[450] != 0xEE or mbr[510:512] != b"\x55\xaa":
            raise NetinstallError("the GPT disk has no protective MBR")


@contextmanager
def _restoring(path: Path, saved: SavedTable) -> Iterator[None]:
    """Put the saved bytes back, and say so, if the body fails."""
    try:
        yield
    except Exception as exc:
        try:
            restore_table(path, saved)
        except OSError as again:
            raise NetinstallError(
                f"{exc}; putting the previous table back also failed ({again.strerror}), "
                f"so {path} may hold a broken partition table"
            ) from exc
        log.warning("%s: the previous partition table was put back", path)
        raise NetinstallError(f"{exc}; the previous partition table was put back") from exc


def _commit(disk: Any, path: Path) -> None:
    """The one write of the new table."""
    try:
        disk.commitToDevice()
    except PARTED_ERRORS as exc:
        raise NetinstallError(f"writing the partition table to {path} failed: {exc}") from exc


def _tell_kernel(path: Path) -> None:
    """Ask the kernel to re-read a block device's table (an image file needs nothing)."""
    if not is_block_device(path):
        return
    try:
        run(["partprobe", str(path)], timeout=60)
    except CommandError as exc:
        raise NetinstallError(
            f"the partition table is on {path} but the kernel could not re-read it: {exc}"
        ) from exc


def apply_plan(plan: Plan, target: str | Path, *, facts_before: DiskFacts | None = None) -> None:
    """Write ``plan`` to ``target`` (image file or block device) and verify it.

    ``facts_before``, the facts the plan was made from, makes the write refuse
    a disk whose table changed since. A plan in which every partition is kept
    and which the disk already holds writes nothing.
    """
    path = check_target(target)
    before = read_partitions(path)
    _refuse(plan, before, path, facts_before)
    if all(p.keep for p in plan.partitions) and _holds(plan, before):
        return
    with open_device(path) as device:
        try:
            disk, patches = build_table(plan, device, before)
        except PARTED_ERRORS as exc:
            raise NetinstallError(f"the planned table cannot be built: {exc}") from exc
        saved = save_table(path, before.size)
        with _restoring(path, saved):
            _commit(disk, path)
            _patch_dos_types(path, plan, patches)
    with _restoring(path, saved):
        verify(plan, path)
    _tell_kernel(path)
