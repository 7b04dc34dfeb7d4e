"""The applier, the table reader and mkfs on sparse image files and loop devices.

Plans are built by hand here (SPEC §6), not by the planner, and every table is
read back with util-linux's ``sfdisk -J``, not with our own reader.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from common.errors import NetinstallError, PlanError
from partitioning import apply as apply_module
from partitioning.apply import apply_plan
from partitioning.facts import read_partitions
from partitioning.mkfs import make_filesystems, partition_device
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
    Filesystem,
    GiB,
    Label,
    Layout,
    MiB,
    Partition,
    Plan,
    TiB,
    Use,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk (util-linux) is missing"),
]

SECTOR = 512
LINUX_DATA = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
UTILITY = (1 * MiB, 8 * MiB)  # start, size of the utility partition in the test images
OLD_UTILITY = (63 * SECTOR, 8 * MiB)  # the same at the old DOS start, inside the first MiB

# ---------------------------------------------------------------- plans by hand (SPEC §6)


def _up(value: int) -> int:
    return -(-value // MiB) * MiB


def _slots(start: int, end: int, rows: list[tuple[Any, ...]]) -> list[Partition]:
    """Lay ``rows`` (number, use, size or None for the rest, ...) out from ``start``."""
    parts, position = [], start
    for number, use, wanted, gpt, dos, name, fs, fs_label in rows:
        length = end - position if wanted is None else wanted
        parts.append(Partition(number, position, length, use, gpt, dos, name, fs, fs_label))
        position += length
    return parts


def new_gpt(
    size: int, *, uefi: bool = True, kept: Partition | None = None, sr: bool = True
) -> Plan:
    """SPEC §6's new GPT layout: 5 logs, 2 backup, 1 root, 4 ESP/BIOS boot, 6 swap, 3 SR."""
    s = 1 if kept else 0
    boot = (
        (EFI_SYSTEM, "esp", Filesystem.VFAT, "ESP")
        if uefi
        else (BIOS_BOOT, "bios-boot", Filesystem.NONE, None)
    )
    rows = [
        (5 + s, Use.LOGS, 4 * GiB, BASIC_DATA, None, "logs", Filesystem.EXT4, "logs"),
        (2 + s, Use.BACKUP, 18 * GiB, BASIC_DATA, None, "backup", Filesystem.EXT4, "backup"),
        (1 + s, Use.ROOT, 18 * GiB, BASIC_DATA, None, "root", Filesystem.EXT4, "root"),
        (4 + s, Use.ESP if uefi else Use.BIOS_BOOT, 512 * MiB, boot[0], None, *boot[1:]),
        (6 + s, Use.SWAP, 1 * GiB, LINUX_SWAP, None, "swap", Filesystem.SWAP, "swap"),
        (3 + s, Use.SR, None, LINUX_LVM, None, "sr", Filesystem.NONE, None),
    ]
    end = (size - 33 * SECTOR) // MiB * MiB
    parts = _slots(_up(kept.end) if kept else MiB, end, rows if sr else rows[:5])
    return Plan(Label.GPT, Layout.NEW_GPT, size, SECTOR, (*([kept] if kept else []), *parts))


def dos(size: int, *, kept: Partition | None = None) -> Plan:
    """SPEC §6's DOS layout: 1 root 4 GiB, 2 backup 4 GiB, 3 SR (shifted by a kept utility)."""
    s = 1 if kept else 0
    rows = [
        (1 + s, Use.ROOT, 4 * GiB, None, DOS_LINUX, "", Filesystem.EXT4, "root"),
        (2 + s, Use.BACKUP, 4 * GiB, None, DOS_LINUX, "", Filesystem.EXT4, "backup"),
        (3 + s, Use.SR, None, None, DOS_LVM, "", Filesystem.NONE, None),
    ]
    end = min(size, 2**32 * SECTOR) // MiB * MiB
    parts = _slots(_up(kept.end) if kept else MiB, end, rows)
    return Plan(Label.DOS, Layout.DOS, size, SECTOR, (*([kept] if kept else []), *parts))


def utility(label: Label, where: tuple[int, int] = UTILITY) -> Partition:
    """The kept utility partition 1, typed for ``label``."""
    if label is Label.GPT:
        return Partition(1, *where, Use.UTILITY, EFI_SYSTEM, name=DELL_UTILITY_NAME, keep=True)
    return Partition(1, *where, Use.UTILITY, dos_type=DOS_UTILITY, keep=True)


# ---------------------------------------------------------------- images and read-back


def image(tmp_path: Path, size: int, name: str = "disk.img") -> Path:
    path = tmp_path / name
    with path.open("wb") as stream:
        stream.truncate(size)
    return path


def sfdisk_write(path: Path, script: str) -> None:
    subprocess.run(["sfdisk", "-q", str(path)], input=script, text=True, check=True, timeout=30)


def sfdisk_json(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["sfdisk", "-J", str(path)], check=False, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    table: dict[str, Any] = json.loads(done.stdout)["partitiontable"]
    return table


def rows(path: Path) -> dict[int, dict[str, Any]]:
    """sfdisk's partitions by number (the digits after the image name in ``node``)."""
    return {int(p["node"][len(str(path)) :]): p for p in sfdisk_json(path).get("partitions", [])}


def assert_on_disk(path: Path, plan: Plan) -> None:
    """sfdisk reads back exactly the plan: label, numbers, sectors, types, names."""
    table = sfdisk_json(path)
    assert table["label"] == plan.label.value
    found = rows(path)
    assert sorted(found) == sorted(p.number for p in plan.partitions)
    for part in plan.partitions:
        row = found[part.number]
        assert (row["start"], row["size"]) == (part.start // SECTOR, part.size // SECTOR), part
        if plan.label is Label.GPT:
            assert row["type"] == part.gpt_type, part
            assert row.get("name", "") == part.name, part
        else:
            assert row["type"] == f"{part.dos_type:x}", part
    if plan.label is Label.GPT:
        with path.open("rb") as stream:
            mbr = stream.read(512)
        assert mbr[450] == 0xEE, "protective MBR"


def ends(path: Path) -> tuple[int, str, str]:
    """File size and the sha256 of the first and the last MiB."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        head = stream.read(MiB)
        stream.seek(size - MiB)
        tail = stream.read()
    return size, hashlib.sha256(head).hexdigest(), hashlib.sha256(tail).hexdigest()


def fill(path: Path, start: int, size: int) -> str:
    """Write a random pattern over ``size`` bytes at ``start``; its sha256."""
    data = os.urandom(size)
    with path.open("r+b") as stream:
        stream.seek(start)
        stream.write(data)
    return hashlib.sha256(data).hexdigest()


def digest(path: Path, start: int, size: int) -> str:
    with path.open("rb") as stream:
        stream.seek(start)
        return hashlib.sha256(stream.read(size)).hexdigest()


def old_gpt(path: Path) -> None:
    """XenServer 6.x's layout, as sfdisk makes it: 1 root 4 GiB, 2 backup 4 GiB, 3 SR."""
    sfdisk_write(
        path,
        f"label: gpt\nstart=2048, size=8388608, type={LINUX_DATA}\n"
        f"size=8388608, type={LINUX_DATA}\nsize=+, type={LINUX_LVM}\n",
    )


def with_utility(path: Path, label: Label, where: tuple[int, int] = UTILITY) -> str:
    """A disk whose partition 1 is a utility partition filled with a pattern; its sha256."""
    start, size = where[0] // SECTOR, where[1] // SECTOR
    if label is Label.GPT:
        line = f'start={start}, size={size}, type={EFI_SYSTEM}, name="{DELL_UTILITY_NAME}"'
        sfdisk_write(path, f"label: gpt\n{line}\nsize=+, type={LINUX_DATA}\n")
    else:
        sfdisk_write(path, f"label: dos\nstart={start}, size={size}, type=de\nsize=+, type=83\n")
    return fill(path, *where)


# ---------------------------------------------------------------- fresh layouts

GPT_SIZES = [46 * GiB, 60 * GiB, 500 * GiB, int(2.5 * TiB)]
DOS_SIZES = [12 * GiB, 30 * GiB, 46 * GiB, 60 * GiB, 500 * GiB]  # DOS stops at 2 TiB


@pytest.mark.parametrize("size", GPT_SIZES, ids=lambda s: f"{s / GiB:g}GiB")
@pytest.mark.parametrize("uefi", [True, False], ids=["uefi", "bios"])
def test_new_gpt_layout(tmp_path: Path, size: int, uefi: bool) -> None:
    path = image(tmp_path, size)
    plan = new_gpt(size, uefi=uefi)
    apply_plan(plan, path)
    assert_on_disk(path, plan)
    assert path.stat().st_blocks * 512 < 16 * MiB, "the image stays sparse"


@pytest.mark.parametrize("size", DOS_SIZES, ids=lambda s: f"{s / GiB:g}GiB")
def test_dos_layout(tmp_path: Path, size: int) -> None:
    path = image(tmp_path, size)
    plan = dos(size)
    apply_plan(plan, path)
    assert_on_disk(path, plan)
    assert [rows(path)[n]["type"] for n in (1, 2, 3)] == ["83", "83", "8e"]


def test_a_missing_number_stays_missing(tmp_path: Path) -> None:
    """guest-storage=no: no partition 3, yet 4, 5 and 6 keep their numbers."""
    path = image(tmp_path, 46 * GiB)
    plan = new_gpt(46 * GiB, sr=False)
    apply_plan(plan, path)
    assert sorted(rows(path)) == [1, 2, 4, 5, 6]
    assert_on_disk(path, plan)


def test_applying_twice_gives_the_same_table(tmp_path: Path) -> None:
    path = image(tmp_path, 60 * GiB)
    plan = new_gpt(60 * GiB)
    apply_plan(plan, path)
    first = sfdisk_json(path)
    apply_plan(plan, path)
    second = sfdisk_json(path)

    def without_guids(table: dict[str, Any]) -> dict[str, Any]:
        parts = [{k: v for k, v in p.items() if k != "uuid"} for p in table["partitions"]]
        return {**{k: v for k, v in table.items() if k != "id"}, "partitions": parts}

    assert without_guids(first) == without_guids(second)


# ---------------------------------------------------------------- kept partitions


@pytest.mark.parametrize(
    ("before", "where"),
    [(Label.GPT, UTILITY), (Label.DOS, UTILITY), (Label.DOS, OLD_UTILITY)],
    ids=["from-gpt", "from-dos", "from-dos-sector-63"],
)
def test_utility_partition_kept_on_gpt(
    tmp_path: Path, before: Label, where: tuple[int, int]
) -> None:
    """Partition 1 kept, the rest shifted (on-disk order 1, 6, 3, 2, 5, 7, 4)."""
    path = image(tmp_path, 60 * GiB)
    pattern = with_utility(path, before, where)
    old_uuid = rows(path)[1].get("uuid")
    plan = new_gpt(60 * GiB, kept=utility(Label.GPT, where))
    apply_plan(plan, path)
    assert_on_disk(path, plan)
    on_disk = sorted(rows(path).items(), key=lambda item: item[1]["start"])
    assert [number for number, _ in on_disk] == [1, 6, 3, 2, 5, 7, 4]
    assert digest(path, *where) == pattern
    if before is Label.GPT:
        assert rows(path)[1]["uuid"] == old_uuid, "same table edited, GUID kept"


@pytest.mark.parametrize("before", [Label.GPT, Label.DOS], ids=["from-gpt", "from-dos"])
def test_utility_partition_kept_on_dos(tmp_path: Path, before: Label) -> None:
    path = image(tmp_path, 12 * GiB)
    pattern = with_utility(path, before)
    plan = dos(12 * GiB, kept=utility(Label.DOS))
    apply_plan(plan, path)
    assert_on_disk(path, plan)
    assert [rows(path)[n]["type"] for n in (1, 2, 3, 4)] == ["de", "83", "83", "8e"]
    assert digest(path, *UTILITY) == pattern


# ---------------------------------------------------------------- upgrades from old layouts


def test_old_gpt_gains_a_boot_partition(tmp_path: Path) -> None:
    """VMs on the SR or a small disk: root shrinks to 3584 MiB, 4 boot after it, 2 and 3 kept."""
    size = 30 * GiB
    path = image(tmp_path, size)
    old_gpt(path)
    old = rows(path)
    backup = (old[2]["start"] * SECTOR, old[2]["size"] * SECTOR)
    sr = (old[3]["start"] * SECTOR, old[3]["size"] * SECTOR)
    sums = fill(path, backup[0], MiB), fill(path, sr[0], MiB)
    plan = Plan(
        Label.GPT,
        Layout.OLD_GPT_BOOT,
        size,
        SECTOR,
        (
            Partition(1, MiB, 3584 * MiB, Use.ROOT, BASIC_DATA, None, "root", Filesystem.EXT4),
            Partition(4, MiB + 3584 * MiB, 512 * MiB, Use.BIOS_BOOT, BIOS_BOOT, None, "bios-boot"),
            Partition(2, *backup, Use.BACKUP, LINUX_DATA, keep=True),
            Partition(3, *sr, Use.SR, LINUX_LVM, keep=True),
        ),
    )
    apply_plan(plan, path)
    assert_on_disk(path, plan)
    new = rows(path)
    assert [new[n]["uuid"] for n in (2, 3)] == [old[n]["uuid"] for n in (2, 3)]
    assert (digest(path, backup[0], MiB), digest(path, sr[0], MiB)) == sums


def test_old_gpt_becomes_the_new_layout(tmp_path: Path) -> None:
    """No VMs and 46 GiB or more: the new GPT layout replaces the old table."""
    path = image(tmp_path, 60 * GiB)
    old_gpt(path)
    facts = read_partitions(path)
    plan = new_gpt(60 * GiB)
    before = DiskFacts(facts.size, facts.sector_size, facts.label, facts.partitions)
    apply_plan(plan, path, facts_before=before)
    assert_on_disk(path, plan)


@pytest.mark.parametrize("layout", ["dos", "new-gpt"])
def test_an_unchanged_layout_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    """DOS stays DOS and the new GPT stays as it is: a plan keeping everything writes nothing."""
    size = 60 * GiB
    path = image(tmp_path, size)
    written = dos(size) if layout == "dos" else new_gpt(size)
    apply_plan(written, path)
    kept = tuple(replace(p, keep=True) for p in written.partitions)
    before = ends(path)

    def no_commit(*args: object) -> None:
        raise AssertionError("nothing is to be committed")

    monkeypatch.setattr(apply_module, "_commit", no_commit)
    apply_plan(replace(written, partitions=kept), path)
    assert ends(path) == before


# ---------------------------------------------------------------- refusals and recovery


def test_size_mismatch_is_refused_and_nothing_written(tmp_path: Path) -> None:
    path = image(tmp_path, 30 * GiB)
    old_gpt(path)
    before = ends(path)
    with pytest.raises(PlanError, match="plan is for a disk of"):
        apply_plan(new_gpt(46 * GiB), path)
    assert ends(path) == before


def test_a_kept_partition_that_is_not_there_is_refused(tmp_path: Path) -> None:
    path = image(tmp_path, 60 * GiB)
    old_gpt(path)
    before = ends(path)
    with pytest.raises(PlanError, match="to be kept"):
        apply_plan(new_gpt(60 * GiB, kept=utility(Label.GPT)), path)
    assert ends(path) == before


def test_a_table_changed_since_planning_is_refused(tmp_path: Path) -> None:
    path = image(tmp_path, 60 * GiB)
    old_gpt(path)
    table = read_partitions(path)
    stale = DiskFacts(table.size, table.sector_size, table.label, table.partitions[:2])
    before = ends(path)
    with pytest.raises(PlanError, match="changed since it was planned"):
        apply_plan(new_gpt(60 * GiB), path, facts_before=stale)
    assert ends(path) == before


@pytest.mark.parametrize("what", ["verify", "_patch_dos_types"])
def test_failure_after_commit_puts_the_old_table_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    path = image(tmp_path, 60 * GiB)
    old_gpt(path)
    before, table = ends(path), sfdisk_json(path)

    def fail(*args: object) -> None:
        assert sfdisk_json(path) != table, "the new table was committed"
        raise NetinstallError("simulated failure")

    monkeypatch.setattr(apply_module, what, fail)
    with pytest.raises(NetinstallError, match="simulated failure; the previous partition table"):
        apply_plan(new_gpt(60 * GiB), path)
    assert ends(path) == before
    assert sfdisk_json(path) == table


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_target_that_is_no_disk_is_one_sentence(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "nothing.img"
    if kind == "directory":
        target.mkdir()
    with pytest.raises(PlanError, match=str(target)):
        read_partitions(target)
    with pytest.raises(PlanError):
        apply_plan(new_gpt(60 * GiB), target)


# ---------------------------------------------------------------- the reader against sfdisk


def test_reader_agrees_with_sfdisk(tmp_path: Path) -> None:
    path = image(tmp_path, 12 * GiB)
    sfdisk_write(
        path,
        "label: dos\nstart=2048, size=65536, type=de\nsize=8388608, type=83\n"
        "size=1000000, type=5\nsize=20000, type=8e\nsize=20000, type=7\n",
    )
    table = read_partitions(path)
    found = {
        p.number: (p.start // SECTOR, p.size // SECTOR, f"{p.dos_type:x}") for p in table.partitions
    }
    expected = {n: (r["start"], r["size"], r["type"]) for n, r in rows(path).items()}
    assert table.label is Label.DOS
    assert found == expected
    gpt = image(tmp_path, 60 * GiB, "gpt.img")
    with_utility(gpt, Label.GPT)
    table = read_partitions(gpt)
    assert [(p.number, p.gpt_type, p.name) for p in table.partitions] == [
        (n, r["type"], r.get("name", "")) for n, r in sorted(rows(gpt).items())
    ]


# ---------------------------------------------------------------- mkfs on a loop device


@pytest.mark.usefixtures("loop_devices")
def test_mkfs_on_a_loop_device(tmp_path: Path, attach: Any) -> None:
    path = image(tmp_path, 60 * GiB)
    plan = new_gpt(60 * GiB)
    apply_plan(plan, path)
    made = make_filesystems(plan, path)
    assert len(made) == 5
    attached = subprocess.run(
        ["losetup", "-j", str(path)], capture_output=True, text=True, check=True
    )
    assert attached.stdout == "", "make_filesystems detached its loop device"
    loop = attach(path)
    expected: dict[int, tuple[str | None, str | None]] = {
        **{5: ("ext4", "logs"), 2: ("ext4", "backup"), 1: ("ext4", "root")},
        **{4: ("vfat", "ESP"), 6: ("swap", "swap"), 3: (None, None)},
    }
    for number, wanted in expected.items():
        assert blkid(partition_device(loop, number)) == wanted, number


def blkid(node: str) -> tuple[str | None, str | None]:
    """TYPE and LABEL of what is on ``node`` (waiting briefly for the node to appear)."""
    deadline = time.monotonic() + 5
    while not Path(node).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    argv = ["blkid", "-p", "-o", "export", node]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return values.get("TYPE"), values.get("LABEL")


@pytest.mark.usefixtures("loop_devices")
def test_apply_and_mkfs_on_a_block_device(tmp_path: Path, attach: Any) -> None:
    """A block device: the kernel learns the new table (partprobe), mkfs uses /dev/loopNpM."""
    path = image(tmp_path, 12 * GiB)
    loop = attach(path, read_only=False)
    plan = dos(12 * GiB)
    apply_plan(plan, loop)
    assert_on_disk(path, plan)
    assert Path(partition_device(loop, 3)).is_block_device()
    assert len(make_filesystems(plan, loop)) == 2
    assert [blkid(partition_device(loop, n)) for n in (1, 2, 3)] == [
        ("ext4", "root"),
        ("ext4", "backup"),
        (None, None),
    ]


def test_mkfs_refuses_a_disk_without_the_plan(tmp_path: Path) -> None:
    """Formatting is only done on a disk that holds the plan; nothing is started otherwise."""
    path = image(tmp_path, 60 * GiB)
    old_gpt(path)
    with pytest.raises(NetinstallError, match="partition"):
        make_filesystems(new_gpt(60 * GiB), path)


def test_partition_device_names() -> None:
    assert partition_device("/dev/sda", 1) == "/dev/sda1"
    assert partition_device("/dev/loop0", 3) == "/dev/loop0p3"
    assert partition_device("/dev/nvme0n1", 6) == "/dev/nvme0n1p6"
