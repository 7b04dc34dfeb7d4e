"""The TFTP server's file cache: files served from memory, read once while unchanged, read
anew when replaced or rewritten, bounded in files and bytes, no descriptor kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pxe_server.tftp import CACHE_BYTES, CACHE_FILES, FileCache, open_file
from pxe_server.tftp_protocol import FileSource, MemorySource, Source


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def content(source: Source) -> bytes:
    data = bytes(source.read(0, source.size))
    source.close()
    return data


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the preads the cache makes (to show what is read and when)."""
    calls: list[int] = []
    real = os.pread

    def counted(fd: int, length: int, offset: int) -> bytes:
        calls.append(length)
        return real(fd, length, offset)

    monkeypatch.setattr(os, "pread", counted)
    return calls


def test_the_bounds_are_the_documented_ones() -> None:
    assert (CACHE_FILES, CACHE_BYTES) == (32, 256 * 1024 * 1024)


def test_a_file_is_read_once_and_then_served_from_memory(tmp_path: Path, reads: list[int]) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"k" * 5000)
    cache = FileCache(4, 1 << 20)
    before = fds()
    first = open_file(tmp_path, "vmlinuz", cache)
    assert isinstance(first, MemorySource)
    assert content(first) == b"k" * 5000
    assert reads == [5000]
    for _ in range(3):
        assert content(open_file(tmp_path, "vmlinuz", cache)) == b"k" * 5000
    assert reads == [5000]  # no read per request, none per block
    assert fds() == before  # nothing kept open
    assert (len(cache), cache.held) == (1, 5000)


def test_a_replaced_or_rewritten_file_is_read_anew(tmp_path: Path, reads: list[int]) -> None:
    path = tmp_path / "grub.cfg"
    path.write_bytes(b"old")
    cache = FileCache(4, 1 << 20)
    assert content(open_file(tmp_path, "grub.cfg", cache)) == b"old"
    path.write_bytes(b"newer")  # another size
    assert content(open_file(tmp_path, "grub.cfg", cache)) == b"newer"
    path.write_bytes(b"NEWER")  # the same size, a later modification time
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert content(open_file(tmp_path, "grub.cfg", cache)) == b"NEWER"
    (tmp_path / "next").write_bytes(b"other")  # the same size and time, another inode
    os.utime(tmp_path / "next", ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    os.replace(tmp_path / "next", path)
    assert content(open_file(tmp_path, "grub.cfg", cache)) == b"other"
    assert reads == [3, 5, 5, 5]
    assert (len(cache), cache.held) == (1, 5)


def test_a_transfer_keeps_the_content_it_started_with(tmp_path: Path) -> None:
    path = tmp_path / "initrd"
    path.write_bytes(b"a" * 100)
    cache = FileCache(4, 1 << 20)
    running = open_file(tmp_path, "initrd", cache)
    path.write_bytes(b"b" * 10)  # shrunk while served
    assert bytes(running.read(50, 50)) == b"a" * 50
    assert content(open_file(tmp_path, "initrd", cache)) == b"b" * 10
    running.close()


def test_the_cache_holds_at_most_its_files_least_recently_served_dropped(tmp_path: Path) -> None:
    for name in "abcd":
        (tmp_path / name).write_bytes(name.encode() * 10)
    cache = FileCache(3, 1 << 20)
    for name in "abca":  # a served again: b is now the least recently served
        content(open_file(tmp_path, name, cache))
    content(open_file(tmp_path, "d", cache))
    assert (len(cache), cache.held) == (3, 30)
    assert list(cache._entries) == ["c", "a", "d"]


def test_the_cache_holds_at_most_its_bytes(tmp_path: Path) -> None:
    for name, size in (("a", 400), ("b", 400), ("c", 300)):
        (tmp_path / name).write_bytes(b"x" * size)
    cache = FileCache(10, 1000)
    for name in "abc":
        content(open_file(tmp_path, name, cache))
    assert cache.held <= 1000
    assert list(cache._entries) == ["b", "c"]


def test_a_file_bigger_than_the_cache_is_read_per_block(tmp_path: Path) -> None:
    (tmp_path / "install.img").write_bytes(b"i" * 2000)
    cache = FileCache(10, 1000)
    source = open_file(tmp_path, "install.img", cache)
    assert isinstance(source, FileSource)
    assert (source.size, source.read(1990, 512)) == (2000, b"i" * 10)
    source.close()
    assert (len(cache), cache.held) == (0, 0)
