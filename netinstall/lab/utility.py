"""A vendor utility partition on the lab disk, kept byte for byte through every install.

Before the machine first boots, ``make_utility_partition`` gives the empty disk image
a GPT whose partition 1 is a vendor utility partition as SPEC §6 recognises it (type
ESP, named ``DELLUTILITY``) and fills it with a pseudo-random pattern: no filesystem,
so any write to it, however small, changes its hash. The installer must keep it (the
answer file's default ``preserve-first-partition="if-utility"``) and shift its own
partitions by one. ``partition_digest`` hashes it again from the image (the machine
stopped); ``DOM0_HASH`` hashes it from the running dom0 (``lab.shell``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from common.errors import NetinstallError
from common.process import run

SECTOR = 512
START_SECTOR = 2048  # 1 MiB, where partitioning tools start partition 1
SIZE = 32 * 2**20  # the utility partition's size
NAME = "DELLUTILITY"  # with the ESP type: a utility partition (partitioning.model.is_utility)
ESP_TYPE = "EF00"  # sgdisk's code for the EFI system partition GUID
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
SEED = 17  # the pattern is the same on every run, so a report can quote its hash
CHUNK = 2**20


@dataclass(frozen=True)
class Utility:
    """Where the utility partition lies in the image and the sha256 of its bytes."""

    offset: int
    size: int
    sha256: str


def pattern(size: int = SIZE, seed: int = SEED) -> bytes:
    """The partition's contents: ``size`` pseudo-random bytes from ``seed`` (pure)."""
    return random.Random(seed).randbytes(size)  # noqa: S311 - a test pattern, not a secret


def make_utility_partition(disk: Path, size: int = SIZE) -> Utility:
    """A GPT on the empty image ``disk`` with the utility partition as partition 1."""
    if size % SECTOR:
        raise NetinstallError(f"a utility partition of {size} bytes is not whole sectors")
    last = START_SECTOR + size // SECTOR - 1
    run([
        "sgdisk", f"--new=1:{START_SECTOR}:{last}", f"--typecode=1:{ESP_TYPE}",
        f"--change-name=1:{NAME}", str(disk),
    ])  # fmt: skip
    data = pattern(size)
    offset = START_SECTOR * SECTOR
    with disk.open("r+b") as stream:
        stream.seek(offset)
        stream.write(data)
    return Utility(offset, size, hashlib.sha256(data).hexdigest())


def partition_digest(disk: Path, utility: Utility) -> str:
    """The sha256 of the utility partition's bytes in the image ``disk``, read again."""
    digest = hashlib.sha256()
    with disk.open("rb") as stream:
        stream.seek(utility.offset)
        left = utility.size
        while left:
            chunk = stream.read(min(CHUNK, left))
            if not chunk:
                raise NetinstallError(f"{disk} ends inside the utility partition")
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def dom0_hash_command(disk: str) -> str:
    """The shell line that hashes partition 1 of ``disk`` (``vda``) inside dom0 (pure)."""
    return f"sha256sum /dev/{disk}1"


def check_table_entry(disk: Path, checks: list[str], when: str) -> str | None:
    """Partition 1 of the image's table is still the utility partition, where it was."""
    info = run(["sgdisk", "--info=1", str(disk)]).stdout
    wanted = (ESP_GUID, f"First sector: {START_SECTOR} ", f"Partition name: '{NAME}'")
    if not all(text in info for text in wanted):
        return f"{when}: partition 1 is no longer the utility partition: {info.strip()!r}"
    checks.append(f"{when}: partition 1 is still {NAME} from sector {START_SECTOR}")
    return None
