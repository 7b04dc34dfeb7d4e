"""``common.whole_file``: a file appears whole, private, never over another one (unless
asked to replace it), or not at all."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from common.errors import InputError
from common.whole_file import whole_file

EXISTS = "it exists"


def names(where: Path) -> list[str]:
    return sorted(p.name for p in where.iterdir())


def write(target: Path, data: bytes, meanwhile: Callable[[], object] = lambda: None) -> None:
    """``data`` written through ``whole_file``, ``meanwhile`` called before the block ends."""
    with whole_file(target, EXISTS) as file:
        file.write(data)
        meanwhile()


def test_the_file_appears_once_whole_and_private(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    seen: list[list[str]] = []
    write(target, b"first half second half", lambda: seen.append(names(tmp_path)))
    assert len(seen[0]) == 1
    assert seen[0][0].startswith(".out.bin.")  # only the hidden .part so far
    assert seen[0][0].endswith(".part")
    assert target.read_bytes() == b"first half second half"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert names(tmp_path) == ["out.bin"]


def test_an_error_in_the_block_leaves_nothing(tmp_path: Path) -> None:
    def fail() -> None:
        raise RuntimeError("the source failed")

    with pytest.raises(RuntimeError):
        write(tmp_path / "out.bin", b"half", fail)
    assert names(tmp_path) == []


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_file_made_meanwhile_is_never_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_links: bool
) -> None:
    if not hard_links:  # as on vfat: the name is checked, then renamed

        def refuse(*args: object) -> None:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))

        monkeypatch.setattr(os, "link", refuse)
    target = tmp_path / "out.bin"
    with pytest.raises(InputError, match=EXISTS):
        write(target, b"ours", lambda: target.write_bytes(b"theirs"))
    assert target.read_bytes() == b"theirs"
    assert names(tmp_path) == ["out.bin"]
    target.unlink()
    write(target, b"ours")
    assert target.read_bytes() == b"ours"


def test_replace_renames_over_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with whole_file(target, EXISTS, replace=True) as file:
        file.write(b"new")
    assert (target.read_bytes(), names(tmp_path)) == (b"new", ["out.bin"])


def test_a_directory_that_takes_no_file_is_one_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "out.bin"
    with pytest.raises(InputError) as refused:
        write(missing, b"")
    assert refused.value.problems == (f"cannot write {missing}: No such file or directory",)
