"""extract-root of a zstd archive: zstd and tar joined by a large pipe (installer_core.payload)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import process
from common.errors import CommandError
from installer_core import payload

pytestmark = pytest.mark.integration
needs_tools = pytest.mark.skipif(
    not (shutil.which("zstd") and shutil.which("tar")), reason="needs zstd and GNU tar"
)


def _archive(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/shadow").write_text("root:*:1::::::\n")
    (tree / "etc/shadow").chmod(0o640)
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "usr/lib/big").write_bytes(bytes(range(256)) * 12_000)  # several 1 MiB records
    (tree / "vmlinuz").symlink_to("usr/lib/big")
    plain = tmp_path / "root.tar"
    subprocess.run(["tar", "--numeric-owner", "-cf", str(plain), "-C", str(tree), "."], check=True)
    subprocess.run(
        ["zstd", "-q", "--rm", str(plain), "-o", str(tmp_path / "r.tar.zst")], check=True
    )
    return tmp_path / "r.tar.zst"


@needs_tools
def test_a_zstd_root_is_extracted_through_the_pipeline(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    payload.extract_root({payload.ROOTFS_KEY: archive}, target)
    assert (target / "etc/shadow").stat().st_mode & 0o777 == 0o640
    assert (target / "usr/lib/big").read_bytes() == bytes(range(256)) * 12_000
    assert (target / "vmlinuz").readlink() == Path("usr/lib/big")


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_pipe_between_the_two_has_the_size_asked() -> None:
    check = "import fcntl, sys; sys.exit(fcntl.fcntl(1, fcntl.F_GETPIPE_SZ) != 1 << 20)"
    process.run_pipeline(_python(check), ["cat"], pipe_bytes=1 << 20, timeout=30)
    with pytest.raises(CommandError):  # the default 64 KiB pipe fails the same check
        process.run_pipeline(_python(check), ["cat"], pipe_bytes=1 << 16, timeout=30)


@needs_tools
def test_a_broken_archive_names_zstd(tmp_path: Path) -> None:
    bad = tmp_path / "dom0-rootfs.tar.zst"
    bad.write_bytes(b"not zstd at all" * 100)
    (tmp_path / "target").mkdir()
    with pytest.raises(CommandError, match=r"^zstd exited with status 1") as caught:
        payload.extract_root({payload.ROOTFS_KEY: bad}, tmp_path / "target")
    assert caught.value.argv[0] == "zstd"


@needs_tools
def test_a_tar_that_fails_is_named_even_when_zstd_dies_of_the_broken_pipe(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    with pytest.raises(CommandError, match=r"^tar exited with status 2") as caught:
        payload.extract_root({payload.ROOTFS_KEY: archive}, tmp_path / "no-such-target")
    assert "no-such-target" in caught.value.stderr


def test_a_consumer_that_stops_reading_early_fails_the_pipeline() -> None:
    with pytest.raises(CommandError, match=r"^yes exited with status -13") as caught:
        process.run_pipeline(["yes"], ["head", "-c", "10"], pipe_bytes=1 << 16, timeout=30)
    assert caught.value.argv == ("yes",)


def test_a_missing_command_is_status_127() -> None:
    with pytest.raises(CommandError, match="command not found") as caught:
        process.run_pipeline(["no-such-command-x4"], ["cat"], pipe_bytes=1 << 16, timeout=5)
    assert caught.value.returncode == 127


def test_the_pipeline_is_killed_at_its_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(CommandError, match=r"timed out after 0\.3 s"):
        process.run_pipeline(
            _python("import time; time.sleep(30)"), ["cat"], pipe_bytes=1 << 16, timeout=0.3
        )
    assert time.monotonic() - started < 10
