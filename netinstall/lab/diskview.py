"""Reading a lab disk image back after a run: a read-only loop device, a read-only mount."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from common.errors import NetinstallError
from common.process import run


@contextmanager
def read_only_disk(disk: Path) -> Iterator[str]:
    """A raw disk image as a read-only loop device with its partitions (``/dev/loopNpK``)."""
    device = run(["losetup", "--find", "--show", "--partscan", "--read-only", str(disk)])
    loop = device.stdout.strip()
    try:
        run(["partprobe", loop], ok_codes=(0, 1))
        _wait_for(Path(f"{loop}p1"))
        yield loop
    finally:
        run(["losetup", "--detach", loop], ok_codes=(0, 1))


def _wait_for(node: Path, seconds: float = 10) -> None:
    """Partition nodes appear a moment after the scan (udev, or devtmpfs alone)."""
    deadline = time.monotonic() + seconds
    while not node.exists():
        if time.monotonic() > deadline:
            raise NetinstallError(f"{node} did not appear after the partition scan")
        time.sleep(0.2)


@contextmanager
def mounted(device: str) -> Iterator[Path]:
    """``device`` mounted read-only (no journal replay) on a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="netinstall-lab-root-") as where:
        run(["mount", "-o", "ro,noload", device, where])
        try:
            yield Path(where)
        finally:
            with suppress(NetinstallError):
                run(["umount", where])
