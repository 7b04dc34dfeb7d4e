"""Mounting for the install steps: mount/unmount, chroots.

Every step function takes a ``CommandRunner`` (``common.process.run``, or a
test's fake, so that unit tests start no process). What is mounted is read from
``/proc/self/mountinfo``, so unmounting is idempotent and finds mounts that a
failed step left behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.errors import CommandError
from common.process import CommandRunner

log = logging.getLogger(__name__)

MOUNTINFO = Path("/proc/self/mountinfo")
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def mount_points(mountinfo: Path = MOUNTINFO) -> list[Path]:
    """Every mount point, in the order the kernel lists them (parents first)."""
    try:
        text = mountinfo.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [Path(_unescape(line.split()[4])) for line in text.splitlines() if line.strip()]


def mounts_under(top: Path, mountinfo: Path = MOUNTINFO) -> list[Path]:
    """Mount points at or below ``top``, deepest first: the order to unmount them in."""
    top = Path(os.path.normpath(top))
    found = [p for p in mount_points(mountinfo) if p == top or top in p.parents]
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda p: len(p.parts), reverse=True)


def is_mounted(path: Path, mountinfo: Path = MOUNTINFO) -> bool:
    return Path(os.path.normpath(path)) in mount_points(mountinfo)


def mount(
    runner: CommandRunner,
    device: str | Path,
    where: Path,
    *,
    fstype: str | None = None,
    options: str = "",
) -> None:
    """Mount ``device`` at ``where`` (created if missing)."""
    where.mkdir(parents=True, exist_ok=True)
    argv = ["mount", *(["-t", fstype] if fstype else []), *(["-o", options] if options else [])]
    runner([*argv, str(device), str(where)], timeout=120)


def unmount_all(runner: CommandRunner, top: Path, mountinfo: Path = MOUNTINFO) -> list[Path]:
    """Unmount everything at or below ``top``, deepest first; say what was unmounted.

    A mount that will not go (a process still has a file open) is detached
    lazily, so a failed install never leaves the target half mounted.
    """
    done = []
    for point in mounts_under(top, mountinfo):
        try:
            runner(["umount", str(point)], timeout=120)
        except CommandError as exc:
            log.warning("umount %s failed (%s); detaching it lazily", point, exc)
            runner(["umount", "--lazy", str(point)], timeout=120)
        done.append(point)
    return done


@contextmanager
def mounted(
    runner: CommandRunner,
    device: str | Path,
    where: Path,
    *,
    fstype: str | None = None,
    options: str = "",
) -> Iterator[Path]:
    """``device`` mounted at ``where`` for the block; unmounted after, whatever happens."""
    mount(runner, device, where, fstype=fstype, options=options)
    try:
        yield where
    finally:
        unmount_all(runner, where)


@contextmanager
def chroot_mounts(runner: CommandRunner, root: Path) -> Iterator[None]:
    """/dev, /dev/pts, /proc and /sys inside ``root`` for the time commands run in it."""
    binds = (
        ("/dev", root / "dev", None, "bind"),
        ("devpts", root / "dev/pts", "devpts", ""),
        ("proc", root / "proc", "proc", ""),
        ("sysfs", root / "sys", "sysfs", ""),
    )
    mounted: list[Path] = []
    try:
        for device, where, fstype, options in binds:
            mount(runner, device, where, fstype=fstype, options=options)
            mounted.append(where)
        yield
    finally:
        for where in reversed(mounted):
            try:
                runner(["umount", str(where)], timeout=120)
            except CommandError as exc:
                log.warning("umount %s failed (%s); detaching it lazily", where, exc)
                runner(["umount", "--lazy", str(where)], timeout=120)


def chroot_env(**extra: str) -> dict[str, str]:
    """A small, fixed environment for commands run inside the target."""
    return {"PATH": CHROOT_PATH, "LANG": "C.UTF-8", "HOME": "/root", **extra}
