"""Make the filesystems a plan asks for: ext4, vfat (the ESP) and swap (SPEC §6).

Partitions marked ``keep`` and partitions without a filesystem (the SR, BIOS
boot) are left alone; the SR is made by the installer, not here. Every command
goes through ``common.process.run``. An image file is attached to a loop
device for the time it takes and always detached again. Before formatting,
the disk's table is compared with the plan, so a disk that does not hold the
plan is never formatted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.errors import CommandError, NetinstallError
from common.process import run
from partitioning.apply import check_table
from partitioning.facts import check_target, is_block_device, read_partitions
from partitioning.model import Filesystem, Partition, Plan

NODE_WAIT = 5.0  # seconds to wait for partition device nodes to appear
_POLL = 0.05


MAPPER = "/dev/mapper/"


def partition_device(disk: str, number: int) -> str:
    """The device node of partition ``number`` of ``disk``: sda -> sda1, loop0/nvme0n1 -> ...p1,
    a device-mapper map (multipath) -> ``/dev/mapper/<map>-part1``, as kpartx names it."""
    if disk.startswith(MAPPER):
        return f"{disk}-part{number}"
    return f"{disk}p{number}" if disk[-1:].isdigit() else f"{disk}{number}"


def mkfs_command(part: Partition, device: str) -> list[str] | None:
    """The command that makes ``part``'s filesystem on ``device``; None if it needs none."""
    label = part.fs_label
    if part.filesystem is Filesystem.EXT4:
        return ["mkfs.ext4", "-F", "-q", *(["-L", label] if label else []), device]
    if part.filesystem is Filesystem.VFAT:
        return ["mkfs.vfat", "-F", "32", *(["-n", label] if label else []), device]
    if part.filesystem is Filesystem.SWAP:
        return ["mkswap", *(["-L", label] if label else []), device]
    return None


def _to_format(plan: Plan) -> list[Partition]:
    """The partitions that get a filesystem, in number order."""
    parts = [p for p in plan.partitions if not p.keep and p.filesystem is not Filesystem.NONE]
    return sorted(parts, key=lambda p: p.number)


def _wait_for(nodes: list[str], seconds: float) -> bool:
    """True once every node exists, False if ``seconds`` pass first."""
    deadline = time.monotonic() + seconds
    while not all(Path(node).is_block_device() for node in nodes):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def ensure_nodes(disk: str, numbers: list[int]) -> None:
    """Make sure the partition nodes exist, asking the kernel with partprobe if they do not."""
    nodes = [partition_device(disk, n) for n in numbers]
    if _wait_for(nodes, min(NODE_WAIT, 1.0)):
        return
    if disk.startswith(MAPPER):  # the kernel does not scan a map: kpartx maps its partitions
        run(["kpartx", "-a", "-s", "-p", "-part", disk], timeout=60)
    else:
        run(["partprobe", disk], timeout=60)
    if not _wait_for(nodes, NODE_WAIT):
        missing = ", ".join(node for node in nodes if not Path(node).is_block_device())
        raise NetinstallError(f"the partition device nodes {missing} did not appear")


@contextmanager
def attached(image: Path) -> Iterator[str]:
    """Attach an image file to a free loop device (partitions scanned); detach it afterwards."""
    try:
        done = run(["losetup", "--find", "--show", "--partscan", str(image)], timeout=30)
    except CommandError as exc:
        raise NetinstallError(
            f"loop devices cannot be used here, so {image} cannot be formatted: {exc}"
        ) from exc
    loop = done.stdout.strip()
    try:
        yield loop
    finally:
        run(["losetup", "-d", loop], timeout=30)


def _format(plan: Plan, disk: str) -> list[str]:
    """Run the mkfs commands for every partition of ``disk`` that needs one."""
    parts = _to_format(plan)
    ensure_nodes(disk, [p.number for p in parts])
    made = []
    for part in parts:
        device = partition_device(disk, part.number)
        command = mkfs_command(part, device)
        if command is None:
            continue
        run(command)
        label = f" labelled {part.fs_label}" if part.fs_label else ""
        made.append(f"partition {part.number} ({part.use.value}): {part.filesystem.value}{label}")
    return made


def make_filesystems(plan: Plan, target: str | Path) -> list[str]:
    """Make the plan's filesystems on ``target`` (block device or image file); say what was made."""
    path = check_target(target)
    check_table(plan, read_partitions(path))
    if not _to_format(plan):
        return []
    if is_block_device(path):
        # by-id links name their disk (sdX); a map's partitions are named after the map
        return _format(plan, str(path) if str(path).startswith(MAPPER) else str(path.resolve()))
    with attached(path) as loop:
        return _format(plan, loop)
