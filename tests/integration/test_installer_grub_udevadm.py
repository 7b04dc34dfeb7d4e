"""The udevadm on grub-install's PATH in the installer image (bootloader.GRUB_PATH):
GRUB's one question answered from sysfs as the real udevadm answers it, anything else
handed to the real one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from images import installer
from installer_core import bootloader

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox is missing"),
]
SHIM = installer.FILES / bootloader.GRUB_PATH.relative_to("/") / "udevadm"
SYS_BLOCK = Path("/sys/class/block")


def _shim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["busybox", "sh", str(SHIM), *args], capture_output=True, text=True, check=False
    )


def _devices() -> list[str]:
    names = sorted(p.name for p in SYS_BLOCK.iterdir()) if SYS_BLOCK.is_dir() else []
    return [n for n in names if Path("/dev", n).exists()][:8]


def test_it_is_in_the_image_and_executable() -> None:
    assert os.access(SHIM, os.X_OK)
    assert f"{bootloader.GRUB_PATH.relative_to('/')}/udevadm" in installer.overlay_files()


def test_grubs_question_gets_the_sysfs_path_udevadm_prints() -> None:
    devices = _devices()
    if not devices:
        pytest.skip("no block device here with a node in /dev")
    for name in devices:
        expected = os.path.realpath(SYS_BLOCK / name).removeprefix("/sys")
        assert expected.startswith("/devices/")
        done = _shim("info", "--query", "path", "--name", f"/dev/{name}")
        assert (done.returncode, done.stdout) == (0, f"{expected}\n"), name


def test_a_symlink_to_a_device_is_followed(tmp_path: Path) -> None:
    devices = _devices()
    if not devices:
        pytest.skip("no block device here with a node in /dev")
    link = tmp_path / "by-id-like"
    link.symlink_to(f"/dev/{devices[0]}")
    expected = os.path.realpath(SYS_BLOCK / devices[0]).removeprefix("/sys")
    assert _shim("info", "--query", "path", "--name", str(link)).stdout == f"{expected}\n"


@pytest.mark.parametrize(
    "args",
    [
        ("info", "--query", "property", "--name", "/dev/null"),  # another question
        ("info", "--query", "path", "--name", "/dev/null"),  # not a block device
        ("settle",),
    ],
)
def test_anything_else_goes_to_the_real_udevadm(args: tuple[str, ...]) -> None:
    done = _shim(*args)
    if Path("/usr/bin/udevadm").exists():
        real = subprocess.run(
            ["/usr/bin/udevadm", *args], capture_output=True, text=True, check=False
        )
        assert done.stdout == real.stdout
    else:  # no udevadm on this host: the hand-over fails as the exec of a missing file
        assert done.returncode == 127
        assert done.stdout == ""
