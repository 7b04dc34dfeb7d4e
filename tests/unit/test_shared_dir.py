"""pxe_server.shared_dir: the directory every server of one registry serves alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InputError, NetinstallError
from pxe_server import shared_dir


def test_without_one_the_server_directory_is_it(tmp_path: Path) -> None:
    assert shared_dir.recorded(tmp_path) is None
    assert shared_dir.shared(tmp_path) == tmp_path


def test_recorded_once_the_same_again_another_refused(tmp_path: Path) -> None:
    server, mount = tmp_path / "srv", tmp_path / "mnt" / "netinstall"
    server.mkdir()
    assert shared_dir.record(server, str(mount)) == mount.resolve()
    assert mount.is_dir()
    assert shared_dir.shared(server) == mount.resolve()
    assert shared_dir.record(server, str(mount) + "/") == mount.resolve()
    with pytest.raises(InputError, match="records another shared directory already"):
        shared_dir.record(server, str(tmp_path / "elsewhere"))


def test_a_recorded_directory_that_is_not_there_is_refused(tmp_path: Path) -> None:
    (tmp_path / shared_dir.SHARED_DIR_FILE).write_text(f"{tmp_path / 'unmounted'}\n")
    with pytest.raises(NetinstallError, match="is not there: mount it"):
        shared_dir.shared(tmp_path)
    (tmp_path / shared_dir.SHARED_DIR_FILE).write_text("relative/path\n")
    with pytest.raises(NetinstallError, match="does not hold an absolute path"):
        shared_dir.shared(tmp_path)


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="--shared-dir"):
        shared_dir.record(tmp_path, str(tmp_path / "file"))
