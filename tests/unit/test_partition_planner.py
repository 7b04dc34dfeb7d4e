"""The pure planner: every layout and refusal of SPEC §6, as tables."""

from __future__ import annotations

from dataclasses import replace

import pytest

from common.errors import PlanError
from common.firmware import Firmware
from partitioning.detect import detect_installation
from partitioning.model import (
    BASIC_DATA,
    BIOS_BOOT,
    DOS_LINUX,
    DOS_LVM,
    DOS_UTILITY,
    EFI_SYSTEM,
    LINUX_LVM,
    LINUX_SWAP,
    DiskFacts,
    ExistingPartition,
    GiB,
    Label,
    Layout,
    MiB,
    Mode,
    Options,
    Plan,
    Preserve,
    TiB,
    Use,
)
from partitioning.planner import plan
from partitioning.sizes import parse_size


def layout(result: Plan) -> list[tuple[int, int, int, str]]:
    """(number, start MiB, size MiB, use) in on-disk order."""
    return [(p.number, p.start // MiB, p.size // MiB, p.use.value) for p in result.partitions]


def last_usable_mib(size: int) -> int:
    return (size - 33 * 512) // MiB


@pytest.mark.parametrize("size", [46 * GiB, 60 * GiB, 500 * GiB, int(2.5 * TiB)])
@pytest.mark.parametrize("firmware", [Firmware.BIOS, Firmware.UEFI])
def test_new_gpt_layout(size: int, firmware: Firmware) -> None:
    result = plan(DiskFacts(size), Options(firmware=firmware))
    assert result.label is Label.GPT
    assert result.layout is Layout.NEW_GPT
    boot = "esp" if firmware is Firmware.UEFI else "bios-boot"
    end = last_usable_mib(size)
    assert layout(result) == [
        (5, 1, 4096, "logs"),
        (2, 4097, 18432, "backup"),
        (1, 22529, 18432, "root"),
        (4, 40961, 512, boot),
        (6, 41473, 1024, "swap"),
        (3, 42497, end - 42497, "sr"),
    ]
    types = {p.number: p.gpt_type for p in result.partitions}
    assert types == {
        5: BASIC_DATA,
        2: BASIC_DATA,
        1: BASIC_DATA,
        4: EFI_SYSTEM if firmware is Firmware.UEFI else BIOS_BOOT,
        6: LINUX_SWAP,
        3: LINUX_LVM,
    }


def test_filesystems_labels_and_mount_points() -> None:
    result = plan(DiskFacts(60 * GiB), Options(firmware=Firmware.UEFI))
    described = {p.use: (p.filesystem.value, p.fs_label, p.mount_point) for p in result.partitions}
    assert described == {
        Use.ROOT: ("ext4", "root", "/"),
        Use.BACKUP: ("ext4", "backup", None),
        Use.LOGS: ("ext4", "logs", "/var/log"),
        Use.ESP: ("vfat", "ESP", "/boot/efi"),
        Use.SWAP: ("swap", "swap", None),
        Use.SR: ("none", None, None),
    }
    bios = plan(DiskFacts(60 * GiB), Options(firmware=Firmware.BIOS)).by_number(4)
    assert (bios.use, bios.filesystem.value, bios.mount_point) == (Use.BIOS_BOOT, "none", None)


def test_no_guest_storage_has_no_partition_3() -> None:
    result = plan(DiskFacts(60 * GiB), Options(guest_storage=False))
    assert [p.number for p in result.partitions] == [5, 2, 1, 4, 6]


def test_dos_layout() -> None:
    result = plan(DiskFacts(30 * GiB), Options(disable_gpt=True))
    assert result.label is Label.DOS
    assert layout(result) == [
        (1, 1, 4096, "root"),
        (2, 4097, 4096, "backup"),
        (3, 8193, 30 * 1024 - 8193, "sr"),
    ]
    assert [p.dos_type for p in result.partitions] == [DOS_LINUX, DOS_LINUX, DOS_LVM]


UTILITY_DOS = ExistingPartition(1, MiB, 31 * MiB, dos_type=DOS_UTILITY)
UTILITY_GPT = ExistingPartition(1, MiB, 63 * MiB, gpt_type=EFI_SYSTEM, name="DELLUTILITY")


def test_kept_utility_partition_shifts_the_numbers() -> None:
    facts = DiskFacts(60 * GiB, label=Label.GPT, partitions=(UTILITY_GPT,))
    result = plan(facts, Options(firmware=Firmware.UEFI))
    assert [p.number for p in result.partitions] == [1, 6, 3, 2, 5, 7, 4]
    first = result.partitions[0]
    assert (first.keep, first.use, first.start, first.size) == (True, Use.UTILITY, MiB, 63 * MiB)
    assert result.partitions[1].start == 64 * MiB
    assert [p.use.value for p in result.partitions[1:]] == [
        "logs",
        "backup",
        "root",
        "esp",
        "swap",
        "sr",
    ]


def test_kept_dos_utility_partition_on_dos_layout() -> None:
    facts = DiskFacts(30 * GiB, label=Label.DOS, partitions=(UTILITY_DOS,))
    result = plan(facts, Options(disable_gpt=True))
    assert [(p.number, p.use.value) for p in result.partitions] == [
        (1, "utility"),
        (2, "root"),
        (3, "backup"),
        (4, "sr"),
    ]
    assert result.partitions[0].dos_type == DOS_UTILITY


def test_dos_utility_kept_when_the_plan_is_gpt() -> None:
    facts = DiskFacts(60 * GiB, label=Label.DOS, partitions=(UTILITY_DOS,))
    first = plan(facts, Options()).partitions[0]
    assert (first.gpt_type, first.name, first.keep) == (EFI_SYSTEM, "DELLUTILITY", True)


@pytest.mark.parametrize(
    ("preserve", "zap", "kept"),
    [
        (Preserve.IF_UTILITY, False, True),
        (Preserve.IF_UTILITY, True, False),
        (Preserve.FALSE, False, False),
        (Preserve.TRUE, False, True),
    ],
)
def test_preserve_first_partition_with_a_utility(preserve: Preserve, zap: bool, kept: bool) -> None:
    facts = DiskFacts(60 * GiB, label=Label.GPT, partitions=(UTILITY_GPT,))
    result = plan(facts, Options(preserve_first_partition=preserve, zap_utility_partitions=zap))
    assert result.partitions[0].keep is kept


def test_preserve_true_keeps_any_first_partition() -> None:
    ordinary = ExistingPartition(1, MiB, 100 * MiB, gpt_type=BASIC_DATA, name="data")
    facts = DiskFacts(60 * GiB, label=Label.GPT, partitions=(ordinary,))
    assert not plan(facts, Options()).partitions[0].keep
    kept = plan(facts, Options(preserve_first_partition=Preserve.TRUE)).partitions[0]
    assert (kept.keep, kept.use, kept.name) == (True, Use.KEPT, "data")


def test_fresh_install_replaces_an_earlier_installation() -> None:
    first = plan(DiskFacts(60 * GiB), Options())
    facts = facts_from(first)
    assert facts.installation is not None
    again = plan(facts, Options())
    assert layout(again) == layout(first)
    assert any("replaces the installation" in note for note in again.notes)


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "options", "message"),
    [
        (
            DiskFacts(30 * GiB),
            Options(),
            "the GPT layout needs a disk of at least 46 GiB; this disk has 30 GiB; add disable-gpt",
        ),
        (DiskFacts(45 * GiB), Options(), "at least 46 GiB"),
        (DiskFacts(11 * GiB), Options(), "netinstall needs at least 12 GiB"),
        (DiskFacts(11 * GiB), Options(disable_gpt=True), "netinstall needs at least 12 GiB"),
        (
            DiskFacts(30 * GiB),
            Options(disable_gpt=True, firmware=Firmware.UEFI),
            "UEFI firmware boots only from GPT disks; remove disable-gpt",
        ),
        (
            DiskFacts(int(2.5 * TiB)),
            Options(disable_gpt=True),
            "a DOS partition table cannot address more than 2 TiB; this disk has 2.5 TiB",
        ),
        (
            DiskFacts(
                60 * GiB,
                label=Label.GPT,
                partitions=(
                    ExistingPartition(1, MiB, 10 * MiB, gpt_type=BASIC_DATA),
                    ExistingPartition(
                        2,
                        11 * MiB,
                        10 * MiB,
                        dos_type=None,
                        gpt_type=EFI_SYSTEM,
                        name="DELLUTILITY",
                    ),
                ),
            ),
            Options(),
            "the utility partition is partition 2; it can only be kept as partition 1",
        ),
        (
            DiskFacts(
                60 * GiB,
                label=Label.DOS,
                partitions=(
                    UTILITY_DOS,
                    ExistingPartition(2, 40 * MiB, 10 * MiB, dos_type=DOS_UTILITY),
                ),
            ),
            Options(),
            "the disk has 2 utility partitions (1, 2)",
        ),
        (DiskFacts(60 * GiB), Options(mode=Mode.UPGRADE), "holds no installation to upgrade"),
        (
            DiskFacts(60 * GiB, label=Label.GPT, partitions=(UTILITY_GPT,)),
            Options(preserve_first_partition=Preserve.TRUE, zap_utility_partitions=True),
            "contradicts",
        ),
    ],
)
def test_refusals(facts: DiskFacts, options: Options, message: str) -> None:
    with pytest.raises(PlanError) as caught:
        plan(facts, options)
    assert message in str(caught.value)
    assert len(caught.value.problems) == 1


def test_kept_partition_leaves_too_little_room() -> None:
    big = ExistingPartition(1, MiB, 10 * GiB, dos_type=DOS_UTILITY)
    facts = DiskFacts(48 * GiB, label=Label.DOS, partitions=(big,))
    with pytest.raises(PlanError, match="after the kept partition 1; this disk has only"):
        plan(facts, Options())


# -- upgrades -------------------------------------------------------------------------


def facts_from(result: Plan, sr_has_vms: bool = False) -> DiskFacts:
    """The facts a disk written with ``result`` would show."""
    parts = tuple(
        ExistingPartition(p.number, p.start, p.size, p.gpt_type, p.dos_type, p.name)
        for p in result.partitions
    )
    return DiskFacts(
        result.disk_size,
        label=result.label,
        partitions=parts,
        installation=detect_installation(result.label, parts),
        sr_has_vms=sr_has_vms,
    )


def old_gpt(size: int, utility: bool = False, sr_has_vms: bool = False) -> DiskFacts:
    shift = 1 if utility else 0
    start = 64 * MiB if utility else MiB
    parts = [UTILITY_GPT] if utility else []
    parts += [
        ExistingPartition(1 + shift, start, 4 * GiB, gpt_type=BASIC_DATA),
        ExistingPartition(2 + shift, start + 4 * GiB, 4 * GiB, gpt_type=BASIC_DATA),
        ExistingPartition(3 + shift, start + 8 * GiB, size - start - 8 * GiB - MiB, LINUX_LVM),
    ]
    table = tuple(parts)
    return DiskFacts(
        size,
        label=Label.GPT,
        partitions=table,
        installation=detect_installation(Label.GPT, table),
        sr_has_vms=sr_has_vms,
    )


def test_detects_the_old_gpt_layout() -> None:
    facts = old_gpt(60 * GiB)
    assert facts.installation is not None
    assert (facts.installation.layout, facts.installation.root) == (Layout.OLD_GPT, 1)
    assert detect_installation(Label.GPT, ()) is None


@pytest.mark.parametrize(("size", "vms"), [(60 * GiB, True), (30 * GiB, False), (30 * GiB, True)])
def test_old_gpt_with_vms_or_small_gets_a_boot_partition(size: int, vms: bool) -> None:
    before = old_gpt(size, sr_has_vms=vms)
    result = plan(before, Options(mode=Mode.UPGRADE, firmware=Firmware.UEFI))
    assert result.layout is Layout.OLD_GPT_BOOT
    assert layout(result) == [
        (1, 1, 3584, "root"),
        (4, 3585, 512, "esp"),
        (2, 4097, 4096, "backup"),
        (3, 8193, before.partitions[2].size // MiB, "sr"),
    ]
    assert [p.keep for p in result.partitions] == [False, False, True, True]


def test_old_gpt_with_utility_shifts_the_boot_partition() -> None:
    result = plan(old_gpt(60 * GiB, utility=True, sr_has_vms=True), Options(mode=Mode.UPGRADE))
    assert [(p.number, p.use.value) for p in result.partitions] == [
        (1, "utility"),
        (2, "root"),
        (5, "bios-boot"),
        (3, "backup"),
        (4, "sr"),
    ]


def test_old_gpt_without_vms_on_a_big_disk_becomes_the_new_layout() -> None:
    result = plan(old_gpt(60 * GiB), Options(mode=Mode.UPGRADE))
    assert result.layout is Layout.NEW_GPT
    assert [p.number for p in result.partitions] == [5, 2, 1, 4, 6, 3]


@pytest.mark.parametrize(
    "first",
    [
        plan(DiskFacts(60 * GiB), Options()),
        plan(DiskFacts(30 * GiB), Options(disable_gpt=True)),
        plan(old_gpt(60 * GiB, sr_has_vms=True), Options(mode=Mode.UPGRADE)),
    ],
    ids=["new-gpt", "dos", "old-gpt-boot"],
)
def test_layouts_that_stay_as_they_are(first: Plan) -> None:
    facts = facts_from(first, sr_has_vms=True)
    result = plan(facts, Options(mode=Mode.UPGRADE))
    assert result.layout is first.layout
    assert layout(result) == layout(first)
    assert all(p.keep for p in result.partitions)


def test_upgrade_of_dos_under_uefi_is_refused() -> None:
    facts = facts_from(plan(DiskFacts(30 * GiB), Options(disable_gpt=True)))
    with pytest.raises(PlanError, match="UEFI firmware boots only from GPT"):
        plan(facts, Options(mode=Mode.UPGRADE, firmware=Firmware.UEFI))


def test_unknown_tables_are_not_installations() -> None:
    parts = (ExistingPartition(1, MiB, GiB, gpt_type=BASIC_DATA),)
    assert detect_installation(Label.GPT, parts) is None
    stray = replace(old_gpt(60 * GiB), installation=None)
    with pytest.raises(PlanError, match="holds no installation"):
        plan(stray, Options(mode=Mode.UPGRADE))


# -- sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("60GiB", 60 * GiB),
        ("46G", 46 * GiB),
        ("512MiB", 512 * MiB),
        ("2.5TiB", int(2.5 * TiB)),
        ("500GB", 500 * 1000**3),
        ("1048576", MiB),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "60XB", "-1G", "0", "G"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(Exception, match="is not a"):
        parse_size(text)
