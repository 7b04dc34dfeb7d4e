"""The lab's utility partition written to a real (sparse) image with sgdisk, then read back
the way the planner and the lab do (netinstall.lab.utility)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from netinstall.lab import utility
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
