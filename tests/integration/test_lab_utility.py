"""The lab's disk checks on real (sparse) images: the utility partition written with sgdisk
and read back the way the planner and the lab do (netinstall.lab.utility), and the DOS
layout check (netinstall.lab.demo)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from netinstall.lab import demo, utility
from netinstall.lab.scenario import SMALL_DISK
from partitioning.facts import read_facts

pytestmark = pytest.mark.skipif(shutil.which("sgdisk") is None, reason="sgdisk is missing")


def test_the_utility_partition_is_what_the_planner_keeps(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    with disk.open("wb") as stream:
        stream.truncate(2**30)
    kept = utility.make_utility_partition(disk)
    assert utility.partition_digest(disk, kept) == kept.sha256
    checks: list[str] = []
    assert utility.check_table_entry(disk, checks, "now") is None
    first = read_facts(disk, False).partitions[0]
    assert (first.number, first.start, first.size) == (1, 2**20, utility.SIZE)
    assert first.is_utility
    with disk.open("r+b") as stream:  # a write into it is seen
        stream.seek(kept.offset + kept.size - 1)
        last = stream.read(1)
        stream.seek(kept.offset + kept.size - 1)
        stream.write(b"\0" if last != b"\0" else b"\1")
    assert utility.partition_digest(disk, kept) != kept.sha256


def _sfdisk(disk: Path, script: str) -> None:
    subprocess.run(["sfdisk", "--quiet", str(disk)], input=script, text=True, check=True)


@pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk is missing")
def test_the_dos_layout_check_reads_the_image(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    with disk.open("wb") as stream:
        stream.truncate(SMALL_DISK)
    _sfdisk(disk, "label: dos\n,4GiB,83\n,4GiB,83\n,,8e\n")
    checks: list[str] = []
    assert demo.check_dos(disk, checks) is None
    assert checks == ["DOS layout: root 4 GiB (83), backup 4 GiB (83), SR 8.0 GiB (8e)"]
    _sfdisk(disk, "label: dos\n,4GiB,83\n,3GiB,83\n,,8e\n")  # a backup of the wrong size
    assert "not the DOS layout" in (demo.check_dos(disk, []) or "")
    _sfdisk(disk, "label: gpt\n,4GiB\n,4GiB\n,,\n")
    assert "a gpt label" in (demo.check_dos(disk, []) or "")
