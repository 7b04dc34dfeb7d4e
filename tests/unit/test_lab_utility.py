"""The lab's utility partition (netinstall.lab.utility): its pattern and its hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from common.errors import NetinstallError
from netinstall.lab import utility
from netinstall.lab.utility import Utility


def test_the_pattern_is_fixed_and_not_a_filesystem() -> None:
    data = utility.pattern(4096)
    assert data == utility.pattern(4096)
    assert data != utility.pattern(4096, seed=18)
    assert len(set(data)) > 200  # no zero-filled stretch a tool would take for empty


def test_the_digest_is_read_from_the_partition_alone(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    data = utility.pattern(8192)
    disk.write_bytes(b"\0" * 1024 + data + b"\xff" * 1024)
    kept = Utility(1024, len(data), hashlib.sha256(data).hexdigest())
    assert utility.partition_digest(disk, kept) == kept.sha256
    with disk.open("r+b") as stream:  # one byte changed inside: another digest
        stream.seek(1024 + 4000)
        stream.write(b"\x00" if data[4000] else b"\x01")
    assert utility.partition_digest(disk, kept) != kept.sha256


def test_an_image_that_ends_inside_the_partition_is_an_error(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 2048)
    with pytest.raises(NetinstallError, match="ends inside the utility partition"):
        utility.partition_digest(disk, Utility(1024, 4096, "0" * 64))


def test_dom0_hashes_partition_one() -> None:
    assert utility.dom0_hash_command("vda") == "sha256sum /dev/vda1"
