"""The built install repository (build/repo), checked from the outside.

Skipped, saying so, until ``netinstall images build --only repo`` has made it.
The initramfs is listed by our own newc cpio reader (``zstd``/``gzip``/``xz``
for the compressed part), so the host needs no initramfs-tools.
"""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest

from hypervisor_payload.checksums import parse_sha256sums, sha256_file
from hypervisor_payload.packs import read_packs
from hypervisor_payload.treeinfo import TreeInfo, parse_treeinfo

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2] / "build" / "repo"
DOM0_BUDGET = 300 * 10**6

if not (REPO / ".treeinfo").is_file():
    pytest.skip(
        f"{REPO}/.treeinfo does not exist: build it with `netinstall images build --only repo`",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def treeinfo() -> TreeInfo:
    return parse_treeinfo((REPO / ".treeinfo").read_text())


@pytest.fixture(scope="module")
def dom0_listing(treeinfo: TreeInfo) -> set[str]:
    archive = REPO / treeinfo.archive
    with subprocess.Popen(["zstd", "-dc", str(archive)], stdout=subprocess.PIPE) as unzstd:
        listed = subprocess.run(
            ["tar", "-t"], stdin=unzstd.stdout, capture_output=True, text=True, check=True
        )
    assert unzstd.returncode == 0
    return set(listed.stdout.splitlines())


def dom0_file(treeinfo: TreeInfo, member: str) -> str:
    """One file of the dom0 archive, as text."""
    with subprocess.Popen(
        ["zstd", "-dc", str(REPO / treeinfo.archive)], stdout=subprocess.PIPE
    ) as unzstd:
        out = subprocess.run(
            ["tar", "-xO", member], stdin=unzstd.stdout, capture_output=True, text=True, check=True
        )
    return out.stdout


def _newc(data: bytes, offset: int) -> tuple[list[str], int]:
    """The member names of the newc cpio archive at ``offset``, and where it ends."""
    names: list[str] = []
    while data[offset : offset + 6] == b"070701":
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        size, name_size = fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + name_size - 1].decode()
        body = (name_start + name_size + 3) & ~3
        offset = (body + size + 3) & ~3
        if name == "TRAILER!!!":
            break
        names.append(name)
    return names, offset


def initramfs_names(path: Path) -> set[str]:
    """Every path in an initramfs: uncompressed cpio parts, then one compressed part."""
    data = path.read_bytes()
    names: list[str] = []
    offset = 0
    while offset < len(data):
        if data[offset : offset + 6] == b"070701":
            found, offset = _newc(data, offset)
            names += found
            while offset < len(data) and data[offset] == 0:
                offset += 1
            continue
        tool = {b"\x28\xb5\x2f\xfd": "zstd", b"\x1f\x8b\x08\x00": "gzip"}.get(
            data[offset : offset + 4], "xz"
        )
        plain = subprocess.run(
            [tool, "-dc"], input=data[offset:], capture_output=True, check=True
        ).stdout
        names += _newc(plain, 0)[0]
        break
    return {name.removeprefix("./") for name in names}


def test_sha256sums_verify_with_sha256sum() -> None:
    done = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = parse_sha256sums((REPO / "SHA256SUMS").read_text())
    assert ".treeinfo" in listed
    assert "SHA256SUMS" not in listed


def test_treeinfo_checksums_cover_and_match_every_file(treeinfo: TreeInfo) -> None:
    files = {
        p.relative_to(REPO).as_posix()
        for p in REPO.rglob("*")
        if p.is_file() and p.name not in (".treeinfo", "SHA256SUMS", ".inputs")
    }
    assert set(treeinfo.checksums) == files
    for name, digest in treeinfo.checksums.items():
        assert sha256_file(REPO / name) == digest, name
    assert treeinfo.product == "netinstall"
    assert (treeinfo.kernel, treeinfo.initrd, treeinfo.xen) == (
        "boot/vmlinuz",
        "boot/initrd.img",
        "boot/xen.gz",
    )


def test_dom0_archive_holds_xen_tools_and_our_services(dom0_listing: set[str]) -> None:
    for member in (
        "./usr/sbin/xl",
        "./usr/sbin/netinstall-firstboot",
        "./usr/sbin/netinstall-agent",
        "./usr/lib/netinstall/netinstall_dom0/__init__.py",
        "./usr/lib/netinstall/common/protocol/messages.py",  # the agent imports it
        "./usr/lib/netinstall/common/process.py",
        "./etc/systemd/system/netinstall-firstboot.service",
        "./etc/systemd/system/multi-user.target.wants/netinstall-firstboot.service",
        "./etc/systemd/system/netinstall-ssh-keys.service",
        # First boot without waiting for the network or for udev to settle (issue 18).
        "./etc/systemd/system/xen.service",
        "./etc/systemd/system/multi-user.target.wants/xen.service",
        "./etc/systemd/system/ifupdown-pre.service.d/netinstall.conf",
        "./etc/systemd/network/10-netinstall-xenbr.link",  # the bridge keeps its NIC's MAC
        "./usr/sbin/netinstall-wait-nics",
        # Compiled at build time (checked-hash), not by the first boot.
        "./usr/lib/netinstall/netinstall_dom0/__pycache__/firstboot.cpython-311.pyc",
        "./usr/lib/netinstall/common/__pycache__/process.cpython-311.pyc",
        "./etc/systemd/system.conf.d/netinstall.conf",
        "./etc/netinstall-release",
        "./usr/sbin/grub-install",
        "./usr/sbin/iscsiadm",
        "./usr/sbin/multipath",
        "./usr/bin/ovs-vsctl",
        "./usr/sbin/ifup",
    ):
        assert member in dom0_listing, member


def test_dom0_archive_carries_no_host_identity(dom0_listing: set[str], treeinfo: TreeInfo) -> None:
    assert not [m for m in dom0_listing if m.startswith("./etc/ssh/ssh_host_")]
    assert "./usr/sbin/policy-rc.d" not in dom0_listing
    assert dom0_file(treeinfo, "./etc/machine-id") == ""
    assert "GenerateName=yes" in dom0_file(treeinfo, "./etc/iscsi/initiatorname.iscsi")


def test_release_file_names_the_payload_version(treeinfo: TreeInfo) -> None:
    release = dict(
        line.split("=", 1) for line in dom0_file(treeinfo, "./etc/netinstall-release").splitlines()
    )
    assert release["NAME"] == "netinstall"
    assert release["VERSION"] == treeinfo.version
    assert release["BUILD"] == treeinfo.build


def test_dom0_archive_keeps_its_own_boot_files(dom0_listing: set[str], treeinfo: TreeInfo) -> None:
    for inside in (treeinfo.root_kernel, treeinfo.root_initrd, treeinfo.root_xen):
        assert inside is not None
        assert f".{inside}" in dom0_listing


def test_xen_is_a_gzipped_multiboot_elf() -> None:
    image = gzip.decompress((REPO / "boot/xen.gz").read_bytes())
    assert image[:4] == b"\x7fELF"
    # Multiboot 1 within the first 8 KiB, multiboot 2 within the first 32 KiB.
    assert 0 <= image.find(struct.pack("<I", 0x1BADB002)) < 8192
    assert 0 <= image.find(struct.pack("<I", 0xE85250D6)) < 32768


def test_kernel_is_a_bzimage() -> None:
    with (REPO / "boot/vmlinuz").open("rb") as stream:
        header = stream.read(0x206)
    assert header[0x202:0x206] == b"HdrS"


def test_initramfs_can_boot_from_ibft_and_multipath() -> None:
    names = initramfs_names(REPO / "boot/initrd.img")

    def has(suffix: str) -> bool:
        return any(name.endswith(suffix) for name in names)

    for wanted in (
        "sbin/iscsistart",
        "scripts/local-top/iscsi",
        "etc/iscsi.initramfs",
        "sbin/multipath",
        "sbin/kpartx",
        "scripts/local-top/multipath",
        "etc/multipath.conf",
        "conf/modules",
    ):
        assert has(wanted), wanted
    for module in ("iscsi_ibft", "iscsi_tcp", "dm-multipath", "xen-evtchn", "xenfs", "ext4"):
        assert has(f"/{module}.ko") or has(f"/{module}.ko.xz") or has(f"/{module}.ko.zst"), module


def test_dom0_archive_within_budget(treeinfo: TreeInfo) -> None:
    size = (REPO / treeinfo.archive).stat().st_size
    assert size <= DOM0_BUDGET, f"{treeinfo.archive} is {size / 1e6:.1f} MB"


def test_packs_listed_in_repository_list_verify() -> None:
    assert (REPO / "XS-REPOSITORY-LIST").is_file()
    for pack in read_packs(REPO):
        assert pack.files


def test_the_management_bridge_keeps_its_nics_mac(treeinfo: TreeInfo) -> None:
    link = dom0_file(treeinfo, "./etc/systemd/network/10-netinstall-xenbr.link")
    assert "OriginalName=xenbr*" in link
    assert "MACAddressPolicy=none" in link
