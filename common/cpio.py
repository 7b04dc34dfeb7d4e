"""A writer and a reader for the ``newc`` cpio format the kernel unpacks as an initramfs.

Written here rather than with GNU cpio so that our archives are byte-reproducible
by construction: names sorted, inode numbers assigned in order, the device of
every entry 0, and (for our generated files) owner root and one fixed mtime.
Character and block device nodes are written from their numbers, so no
``mknod`` is needed on the build host. Hard links share an inode number; the
data travels with the last name of the group, as GNU cpio does (the kernel
accepts that order).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_FIELDS = 13  # after the magic: 13 eight-digit hex numbers
_HEADER_SIZE = len(MAGIC) + 8 * _FIELDS


@dataclass(frozen=True)
class Entry:
    """One archive member: ``data`` (a file's bytes or a symlink's target) or ``source``."""

    name: str  # relative, no leading "/" or "./"
    mode: int  # file type and permission bits
    data: bytes = b""
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node
    link_group: int | None = None  # entries with the same group are hard links
    source: Path | None = None  # a regular file whose bytes are read when written

    def content(self) -> bytes:
        return self.source.read_bytes() if self.source is not None else self.data


def directory(name: str, mtime: int, mode: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFDIR | mode, mtime=mtime)


def regular(name: str, data: bytes, mtime: int, mode: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | mode, data, mtime=mtime)


def char_device(name: str, major: int, minor: int, mtime: int, mode: int = 0o600) -> Entry:
    return Entry(name, stat.S_IFCHR | mode, mtime=mtime, rdev=(major, minor))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(entry: Entry, ino: int, nlink: int, size: int) -> bytes:
    name = entry.name.encode() + b"\0"
    fields = (
        ino,
        entry.mode,
        entry.uid,
        entry.gid,
        nlink,
        entry.mtime,
        size,
        0,  # devmajor
        0,  # devminor
        entry.rdev[0],
        entry.rdev[1],
        len(name),
        0,  # check
    )
    head = MAGIC + b"".join(b"%08X" % value for value in fields) + name
    return head + _pad(len(head))


class Sink(Protocol):
    """Where an archive goes: a binary file, or one that counts what passes."""

    def write(self, data: bytes, /) -> int: ...


def write(entries: Iterable[Entry], stream: Sink) -> int:
    """Write ``entries`` (in the order given) and the trailer; return the bytes written."""
    items = list(entries)
    group_size: dict[int, int] = {}
    last_of_group: dict[int, int] = {}
    for index, entry in enumerate(items):
        if entry.link_group is not None:
            group_size[entry.link_group] = group_size.get(entry.link_group, 0) + 1
            last_of_group[entry.link_group] = index
    group_ino: dict[int, int] = {}
    written = 0
    next_ino = 1
    for index, entry in enumerate(items):
        group = entry.link_group
        if group is not None and group in group_ino:
            ino = group_ino[group]
        else:
            ino = next_ino
            next_ino += 1
            if group is not None:
                group_ino[group] = ino
        nlink = group_size[group] if group is not None else (2 if stat.S_ISDIR(entry.mode) else 1)
        data = entry.content() if group is None or last_of_group[group] == index else b""
        block = _header(entry, ino, nlink, len(data)) + data + _pad(len(data))
        stream.write(block)
        written += len(block)
    trailer = _header(Entry(TRAILER, 0), 0, 1, 0)
    stream.write(trailer)
    return written + len(trailer)


def tree_entries(root: Path, *, mtime: int | None = None) -> Iterator[Entry]:
    """Every file, directory, symlink and device node under ``root``, sorted by name.

    Owners are kept. ``mtime`` (when given) replaces every entry's mtime; else
    each file's own mtime is kept (whole seconds). Sockets and FIFOs are skipped.
    """
    links: dict[tuple[int, int], int] = {}
    for path in _walk_sorted(root):
        info = path.lstat()
        name = path.relative_to(root).as_posix()
        when = int(info.st_mtime) if mtime is None else mtime
        mode = info.st_mode
        group = None
        data = b""
        source = None
        if stat.S_ISREG(mode):
            if info.st_nlink > 1:
                group = links.setdefault((info.st_dev, info.st_ino), len(links))
            source = path
        elif stat.S_ISLNK(mode):
            data = os.readlink(path).encode()
        elif not (stat.S_ISDIR(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            continue
        rdev = (os.major(info.st_rdev), os.minor(info.st_rdev)) if info.st_rdev else (0, 0)
        yield Entry(name, mode, data, info.st_uid, info.st_gid, when, rdev, group, source)


def _walk_sorted(root: Path) -> Iterator[Path]:
    """Paths under ``root`` (not ``root`` itself), each directory before its contents."""
    for child in sorted(root.iterdir(), key=lambda p: p.name):
        yield child
        if child.is_dir() and not child.is_symlink():
            yield from _walk_sorted(child)


@dataclass(frozen=True)
class Member:
    """What the reader reports of one member."""

    name: str
    mode: int
    size: int
    uid: int
    gid: int
    mtime: int
    ino: int
    nlink: int


def read_members(data: bytes) -> Iterator[Member]:
    """The members of one or more concatenated newc archives (trailers and padding skipped)."""
    offset = 0
    while offset < len(data):
        if data[offset] == 0:  # padding between archives
            offset += 1
            continue
        if data[offset : offset + len(MAGIC)] != MAGIC:
            raise ValueError(f"no newc header at offset {offset}")
        numbers = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(_FIELDS)]
        ino, mode, uid, gid, nlink, mtime, size = numbers[:7]
        namesize = numbers[11]
        start = offset + _HEADER_SIZE
        name = data[start : start + namesize - 1].decode()
        offset = start + namesize
        offset += -offset % 4
        offset += size + (-size % 4)
        if name != TRAILER:
            yield Member(name, mode, size, uid, gid, mtime, ino, nlink)
