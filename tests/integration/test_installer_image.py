"""The built installer image holds what the installer needs, within its size budget.

Reads ``build/installer/install.img`` (both concatenated archives) without
unpacking it. The image is built by the end-to-end job (``netinstall images
build``); these tests skip, saying so, where it has not been built.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys

import pytest

from common.cpio import Member, read_members
from images import installer
from tests.conftest import REPO

pytestmark = pytest.mark.integration

BUILT = REPO / "build" / "installer"
IMAGE = BUILT / "install.img"
BUDGET = 120 * 10**6
SITE = "usr/lib/python3/dist-packages"
REQUIRED = (
    "init",
    "usr/bin/python3",
    "usr/bin/busybox",
    f"{SITE}/installer_core/__main__.py",
    f"{SITE}/installer_core/selftest.py",
    f"{SITE}/answerfile/answerfile.rng",
    f"{SITE}/partitioning/apply.py",
    f"{SITE}/common/errors.py",
    f"{SITE}/parted/__init__.py",
    f"{SITE}/lxml/etree.cpython-311-x86_64-linux-gnu.so",
    f"{SITE}/requests/__init__.py",
    "usr/sbin/xl",
    "usr/sbin/xenstored",
    "usr/lib/xen-4.17/bin/xl",
    "usr/lib/xen-4.17/bin/xenstored",
    "usr/sbin/iscsistart",
    "usr/sbin/iscsiadm",
    "usr/sbin/multipath",
    "usr/sbin/kpartx",
    "usr/sbin/mount.nfs",
    "usr/sbin/parted",
    "usr/sbin/sgdisk",
    "usr/sbin/lvm",
    "usr/sbin/mkfs.ext4",
    "usr/sbin/mkfs.vfat",
    "usr/sbin/grub-install",
    "usr/lib/grub/i386-pc/normal.mod",
    "usr/lib/grub/x86_64-efi/normal.mod",
    "usr/bin/efibootmgr",
    "usr/sbin/dhclient",
    "usr/lib/systemd/systemd-udevd",
    "usr/share/zoneinfo/tzdata.zi",
    "etc/netinstall/modules",
)
MODULES = ("virtio_blk", "virtio_net", "e1000", "ext4", "vfat", "nls_cp437", "dm-multipath",
           "iscsi_tcp", "iscsi_ibft", "nfsv4", "xenfs", "xen-privcmd")  # fmt: skip


@pytest.fixture(scope="module")
def members() -> dict[str, Member]:
    if not IMAGE.is_file():
        pytest.skip(
            f"{IMAGE.relative_to(REPO)} is not built: the end-to-end job builds it "
            "(netinstall images build --only installer)"
        )
    if shutil.which("zstd") is None:
        pytest.skip("zstd is missing (scripts/host-packages.txt)")
    data = subprocess.run(
        ["zstd", "-dc", str(IMAGE)], capture_output=True, check=True, timeout=300
    ).stdout
    return {m.name: m for m in read_members(data)}


def test_image_is_within_budget_and_has_a_kernel() -> None:
    if not IMAGE.is_file():
        pytest.skip(f"{IMAGE.relative_to(REPO)} is not built")
    assert IMAGE.stat().st_size <= BUDGET
    vmlinuz = (BUILT / "vmlinuz").read_bytes()
    assert vmlinuz[0x202:0x206] == b"HdrS", "vmlinuz is not a bzImage"


def test_image_holds_the_installer_tools(members: dict[str, Member]) -> None:
    missing = [name for name in REQUIRED if name not in members]
    assert not missing, f"missing from install.img: {missing}"
    assert members["init"].mode == stat.S_IFREG | 0o755
    assert stat.S_ISCHR(members["dev/console"].mode)


def test_image_holds_the_kernel_modules_and_their_index(members: dict[str, Member]) -> None:
    kernels = {m.group(1) for name in members if (m := re.match(r"usr/lib/modules/([^/]+)/", name))}
    assert len(kernels) == 1, kernels
    (version,) = kernels
    assert version.startswith("6.12.")
    base = f"usr/lib/modules/{version}"
    assert f"{base}/modules.dep" in members
    assert f"{base}/modules.alias" in members
    found = {name.rsplit("/", 1)[-1].split(".ko")[0] for name in members if name.startswith(base)}
    assert set(MODULES) <= found, set(MODULES) - found
    # What /init loads at every boot is stored uncompressed, the rest as Debian ships it.
    suffixes = {
        name.rsplit("/", 1)[-1].split(".ko")[0]: name.split(".ko", 1)[1]
        for name in members
        if name.startswith(f"{base}/kernel/") and ".ko" in name
    }
    assert {suffixes[m] for m in ("ext4", "jbd2", "dm-mod", "loop", "xen-evtchn")} == {""}
    assert {suffixes[m] for m in ("nfsv4", "e1000", "vfat")} == {".xz"}


def test_image_is_trimmed_and_carries_no_build_host_or_per_build_state(
    members: dict[str, Member],
) -> None:
    for prefix in ("usr/share/doc/", "usr/share/man/", "usr/share/locale/", "var/lib/apt/lists/"):
        assert not any(n.startswith(prefix) and not n.endswith("/") for n in members), prefix
    for name in ("etc/iscsi/initiatorname.iscsi", "etc/resolv.conf", "usr/sbin/policy-rc.d"):
        assert name not in members
    assert not any(n.startswith(f"{SITE}/netinstall/") for n in members)


def test_init_is_valid_posix_shell() -> None:
    init = REPO / "images" / "installer_files" / "init"
    shells = [s for s in ("busybox", "dash") if shutil.which(s)]
    if not shells:
        pytest.skip("neither busybox nor dash is installed")
    argv = ["busybox", "sh", "-n"] if shells[0] == "busybox" else ["dash", "-n"]
    done = subprocess.run([*argv, str(init)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_image_carries_our_byte_code(members: dict[str, Member]) -> None:
    sources = [n for n in members if n.startswith(f"{SITE}/installer_core/") and n.endswith(".py")]
    assert sources
    if sys.implementation.cache_tag != installer.IMAGE_CACHE_TAG:
        pytest.skip("built by a python3 that does not write the image's byte-code")
    missing = [n for n in sources if installer.pyc_name(n) not in members]
    assert not missing, f"no byte-code for {missing}"
