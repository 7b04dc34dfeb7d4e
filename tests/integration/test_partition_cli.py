"""`netinstall partition plan|apply` on sparse images, read back with util-linux's sfdisk."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import netinstall

pytestmark = pytest.mark.integration

GiB = 1024**3
MiB = 1024**2


def image(tmp_path: Path, size: int, name: str = "disk.img") -> Path:
    path = tmp_path / name
    with path.open("wb") as f:
        f.truncate(size)
    return path


def fingerprint(path: Path) -> tuple[int, str]:
    """Size and a hash of the first and last MiB (where every table lives)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(MiB))
        f.seek(max(size - MiB, 0))
        digest.update(f.read(MiB))
    return size, digest.hexdigest()


def sfdisk(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["sfdisk", "-J", str(path)], capture_output=True, text=True, check=True
    ).stdout
    table: dict[str, object] = json.loads(out)["partitiontable"]
    return table


def numbers_and_sizes(path: Path) -> list[tuple[int, int, int, str]]:
    """(number, start MiB, size MiB, type) in on-disk order, as sfdisk reads them."""
    table = sfdisk(path)
    parts = sorted(table["partitions"], key=lambda p: p["start"])  # type: ignore[index]
    return [
        (
            int(p["node"].rsplit("img", 1)[1]),
            p["start"] * 512 // MiB,
            p["size"] * 512 // MiB,
            p["type"],
        )
        for p in parts
    ]


def test_apply_new_gpt_uefi(tmp_path: Path) -> None:
    disk = image(tmp_path, 60 * GiB)
    result = netinstall("partition", "apply", str(disk), "--firmware", "uefi", "--yes")
    assert result.returncode == 0, result.stderr
    assert "wrote the new-gpt table" in result.stdout
    assert sfdisk(disk)["label"] == "gpt"
    assert numbers_and_sizes(disk) == [
        (5, 1, 4096, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
        (2, 4097, 18432, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
        (1, 22529, 18432, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
        (4, 40961, 512, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        (6, 41473, 1024, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
        (3, 42497, 60 * 1024 - 42497 - 1, "E6D6D379-F507-44C2-A23C-238F2A3DF928"),
    ]
    # The same command again gives the same table (a fresh install replaces the earlier one).
    first = numbers_and_sizes(disk)
    again = netinstall("partition", "apply", str(disk), "--firmware", "uefi", "--yes")
    assert again.returncode == 0, again.stderr
    assert "replaces the installation found" in again.stdout
    assert numbers_and_sizes(disk) == first


def test_apply_dos_layout(tmp_path: Path) -> None:
    disk = image(tmp_path, 12 * GiB)
    result = netinstall("partition", "apply", str(disk), "--disable-gpt", "--yes")
    assert result.returncode == 0, result.stderr
    assert sfdisk(disk)["label"] == "dos"
    assert numbers_and_sizes(disk) == [
        (1, 1, 4096, "83"),
        (2, 4097, 4096, "83"),
        (3, 8193, 12 * 1024 - 8193, "8e"),
    ]


@pytest.mark.parametrize(
    ("size", "args", "message"),
    [
        (30 * GiB, [], "the GPT layout needs a disk of at least 46 GiB; this disk has 30 GiB"),
        (11 * GiB, ["--disable-gpt"], "netinstall needs at least 12 GiB"),
        (30 * GiB, ["--disable-gpt", "--firmware", "uefi"], "UEFI firmware boots only from GPT"),
        (int(2.5 * 1024) * GiB, ["--disable-gpt"], "cannot address more than 2 TiB"),
        (60 * GiB, ["--mode", "upgrade"], "holds no installation to upgrade"),
    ],
)
def test_refused_disks_are_untouched(
    tmp_path: Path, size: int, args: list[str], message: str
) -> None:
    disk = image(tmp_path, size)
    with disk.open("r+b") as f:  # something recognisable where a table would go
        f.write(os.urandom(MiB))
    before = fingerprint(disk)
    result = netinstall("partition", "apply", str(disk), *args, "--yes")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert fingerprint(disk) == before


def test_apply_without_yes_and_no_terminal_writes_nothing(tmp_path: Path) -> None:
    disk = image(tmp_path, 60 * GiB)
    before = fingerprint(disk)
    result = netinstall("partition", "apply", str(disk))
    assert result.returncode == 2
    assert "not writing without --yes" in result.stderr
    assert fingerprint(disk) == before


def old_gpt_image(tmp_path: Path, size: int) -> Path:
    """A XenServer 6.x layout made with sfdisk: 1 root 4 GiB, 2 backup 4 GiB, 3 SR."""
    disk = image(tmp_path, size)
    script = (
        "label: gpt\n"
        "start=2048, size=8388608, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n"
        "start=8390656, size=8388608, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n"
        "start=16779264, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n"
    )
    subprocess.run(
        ["sfdisk", "--quiet", str(disk)], input=script, text=True, check=True, capture_output=True
    )
    return disk


def test_upgrade_old_gpt_with_vms_adds_a_boot_partition(tmp_path: Path) -> None:
    disk = old_gpt_image(tmp_path, 60 * GiB)
    sr_before = numbers_and_sizes(disk)[2]
    plan = netinstall(
        "partition",
        "plan",
        "--existing",
        str(disk),
        "--mode",
        "upgrade",
        "--sr-has-vms",
        "--firmware",
        "uefi",
        "--json",
    )
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["layout"] == "old-gpt-boot"
    result = netinstall(
        "partition",
        "apply",
        str(disk),
        "--mode",
        "upgrade",
        "--sr-has-vms",
        "--firmware",
        "uefi",
        "--yes",
    )
    assert result.returncode == 0, result.stderr
    assert numbers_and_sizes(disk) == [
        (1, 1, 3584, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
        (4, 3585, 512, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        (2, 4097, 4096, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
        sr_before,
    ]


def test_upgrade_old_gpt_without_vms_gets_the_new_layout(tmp_path: Path) -> None:
    disk = old_gpt_image(tmp_path, 60 * GiB)
    result = netinstall("partition", "apply", str(disk), "--mode", "upgrade", "--yes")
    assert result.returncode == 0, result.stderr
    assert [n for n, *_ in numbers_and_sizes(disk)] == [5, 2, 1, 4, 6, 3]


def test_upgrade_of_a_small_old_gpt_disk_keeps_the_sr(tmp_path: Path) -> None:
    disk = old_gpt_image(tmp_path, 30 * GiB)
    result = netinstall("partition", "apply", str(disk), "--mode", "upgrade", "--yes")
    assert result.returncode == 0, result.stderr
    assert [n for n, *_ in numbers_and_sizes(disk)] == [1, 4, 2, 3]
