"""Recognise an installation's layout from a partition table (pure).

The table alone says which layout a disk carries and which partition holds
what; whether the root filesystem really holds a system (and which version) is
for the installer to read.
"""

from __future__ import annotations

from partitioning.model import (
    BASIC_DATA,
    BIOS_BOOT,
    DOS_LINUX,
    DOS_LVM,
    EFI_SYSTEM,
    LINUX_LVM,
    LINUX_SWAP,
    ExistingPartition,
    Installation,
    Label,
    Layout,
    MiB,
)

LINUX_DATA = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
_DATA = (BASIC_DATA, LINUX_DATA)
_BOOT = (EFI_SYSTEM, BIOS_BOOT)


def _shift(partitions: dict[int, ExistingPartition]) -> int:
    first = partitions.get(1)
    return 1 if first is not None and first.is_utility else 0


def _is(part: ExistingPartition | None, gpt: tuple[str, ...]) -> bool:
    return part is not None and part.gpt_type in gpt


def detect_installation(
    label: Label | None, partitions: tuple[ExistingPartition, ...]
) -> Installation | None:
    """The installation layout on this table, or None when it is none of ours."""
    table = {p.number: p for p in partitions}
    shift = _shift(table)

    def n(number: int) -> int:
        return number + shift

    def get(number: int) -> ExistingPartition | None:
        return table.get(n(number))

    expected = {n(k) for k in range(1, 7)} | ({1} if shift else set())
    if set(table) - expected:
        return None
    root, backup, sr = get(1), get(2), get(3)
    if root is None or backup is None:
        return None
    if label is Label.DOS:
        if root.dos_type != DOS_LINUX or backup.dos_type != DOS_LINUX:
            return None
        if (sr is not None and sr.dos_type != DOS_LVM) or set(table) - {1, n(1), n(2), n(3)}:
            return None
        return Installation(Layout.DOS, root=n(1), backup=n(2), sr=n(3) if sr else None)
    if label is not Label.GPT or not (_is(root, _DATA) and _is(backup, _DATA)):
        return None
    if sr is not None and sr.gpt_type != LINUX_LVM:
        return None
    sr_number = n(3) if sr else None
    boot, logs, swap = get(4), get(5), get(6)
    if _is(boot, _BOOT) and _is(logs, _DATA) and _is(swap, (LINUX_SWAP,)):
        return Installation(
            Layout.NEW_GPT,
            root=n(1),
            backup=n(2),
            sr=sr_number,
            boot=n(4),
            logs=n(5),
            swap=n(6),
        )
    if logs is not None or swap is not None:
        return None
    if boot is None:
        return Installation(Layout.OLD_GPT, root=n(1), backup=n(2), sr=sr_number)
    if _is(boot, _BOOT) and boot is not None and 0 <= boot.start - root.end <= MiB:
        return Installation(Layout.OLD_GPT_BOOT, root=n(1), backup=n(2), sr=sr_number, boot=n(4))
    return None
