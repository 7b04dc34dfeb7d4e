"""``.treeinfo``, ``SHA256SUMS`` and the release file: written, read back, refused when wrong."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from common.errors import SourceError
from hypervisor_payload.checksums import parse_sha256sums, render_sha256sums
from hypervisor_payload.dom0_config import release_text
from hypervisor_payload.repo import write_metadata
from hypervisor_payload.treeinfo import TreeInfo, TreeInfoError, parse_treeinfo, render_treeinfo

DIGEST = "a" * 64


def info(**changes: object) -> TreeInfo:
    base: dict[str, object] = {
        "version": "0.2.0",
        "build": "3f2a9c01b7d4",
        "kernel": "boot/vmlinuz",
        "initrd": "boot/initrd.img",
        "xen": "boot/xen.gz",
        "archive": "dom0-rootfs.tar.zst",
        "compression": "zstd",
        "checksums": {
            "boot/vmlinuz": "1" * 64,
            "boot/initrd.img": "2" * 64,
            "boot/xen.gz": "3" * 64,
            "dom0-rootfs.tar.zst": "4" * 64,
            "XS-REPOSITORY-LIST": "5" * 64,
        },
        "root_kernel": "/boot/vmlinuz-6.12.57+deb12-amd64",
        "root_initrd": "/boot/initrd.img-6.12.57+deb12-amd64",
        "root_xen": "/boot/xen-4.17-amd64.gz",
    }
    base.update(changes)
    return TreeInfo(**base)  # type: ignore[arg-type]


def test_round_trip() -> None:
    original = info()
    assert parse_treeinfo(render_treeinfo(original)) == original


def test_round_trip_without_the_optional_root_paths() -> None:
    original = info(root_kernel=None, root_initrd=None, root_xen=None)
    text = render_treeinfo(original)
    assert "/boot/" not in text
    assert parse_treeinfo(text) == original


def test_rendering_is_stable_and_sorted() -> None:
    text = render_treeinfo(info())
    assert text == render_treeinfo(info())
    assert text.startswith("[general]\nproduct = netinstall\nversion = 0.2.0\n")
    lines = text.split("[checksums]\n", 1)[1].splitlines()
    assert lines == sorted(lines)
    assert lines[0] == f"XS-REPOSITORY-LIST = sha256:{'5' * 64}"


def test_payload_files_list_boot_files_first() -> None:
    assert info().payload_files() == (
        "boot/xen.gz",
        "boot/vmlinuz",
        "boot/initrd.img",
        "dom0-rootfs.tar.zst",
        "XS-REPOSITORY-LIST",
    )
    assert info().sha256("boot/xen.gz") == "3" * 64
    with pytest.raises(TreeInfoError, match=r"does not list boot/nothing"):
        info().sha256("boot/nothing")


def test_missing_section_is_named() -> None:
    text = render_treeinfo(info()).replace("[images-xen]", "[images-kvm]")
    with pytest.raises(TreeInfoError, match=r"no \[images-xen\] section"):
        parse_treeinfo(text)


def test_missing_key_is_named() -> None:
    text = render_treeinfo(info()).replace("version = 0.2.0\n", "")
    with pytest.raises(TreeInfoError, match=r"\[general\] has no version="):
        parse_treeinfo(text)


@pytest.mark.parametrize(
    "value",
    ["md5:" + "1" * 32, "sha256:" + "1" * 63, "sha256:" + "G" * 64, "1" * 64, "sha256:" + "A" * 64],
)
def test_bad_checksum_format(value: str) -> None:
    text = render_treeinfo(info()).replace(f"sha256:{'1' * 64}", value)
    with pytest.raises(TreeInfoError, match=r"\[checksums\] boot/vmlinuz=.*expected sha256:"):
        parse_treeinfo(text)


def test_file_without_checksum_is_refused() -> None:
    text = render_treeinfo(info()).replace(f"boot/xen.gz = sha256:{'3' * 64}\n", "")
    with pytest.raises(TreeInfoError, match=r"xen=boot/xen.gz has no entry in \[checksums\]"):
        parse_treeinfo(text)


@pytest.mark.parametrize("path", ["/boot/vmlinuz", "../vmlinuz", "boot/../../x", "./boot/vmlinuz"])
def test_paths_must_stay_in_the_repository(path: str) -> None:
    text = render_treeinfo(info()).replace("kernel = boot/vmlinuz", f"kernel = {path}")
    with pytest.raises(TreeInfoError, match=r"\[images-xen\] kernel=.*inside the repository"):
        parse_treeinfo(text)


def test_other_product_unknown_compression_and_garbage() -> None:
    text = render_treeinfo(info())
    with pytest.raises(TreeInfoError, match=r"product=xenserver"):
        parse_treeinfo(text.replace("product = netinstall", "product = xenserver"))
    with pytest.raises(TreeInfoError, match=r"compression=bzip2"):
        parse_treeinfo(text.replace("compression = zstd", "compression = bzip2"))
    with pytest.raises(TreeInfoError, match=r"not a valid INI file"):
        parse_treeinfo("version = 1\n")
    assert issubclass(TreeInfoError, SourceError)


def test_sha256sums_round_trip_and_format() -> None:
    found = {"b/x": DIGEST, ".treeinfo": "b" * 64}
    text = render_sha256sums(found)
    assert text == f"{'b' * 64}  .treeinfo\n{DIGEST}  b/x\n"
    assert parse_sha256sums(text) == found
    assert parse_sha256sums(f"{DIGEST} *binary\n") == {"binary": DIGEST}
    with pytest.raises(SourceError, match="line 1"):
        parse_sha256sums("deadbeef  file\n")


def test_write_metadata_covers_every_file(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    files = {
        "boot/xen.gz": b"xen",
        "boot/vmlinuz": b"kernel",
        "boot/initrd.img": b"initrd",
        "dom0-rootfs.tar.zst": b"root",
        "XS-REPOSITORY-LIST": b"",
        ".inputs": b"stamp: not part of the repository",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    written = write_metadata(tmp_path, info(checksums={}))
    parsed = parse_treeinfo((tmp_path / ".treeinfo").read_text())
    assert parsed == written
    assert ".inputs" not in parsed.checksums
    assert parsed.sha256("boot/xen.gz") == hashlib.sha256(b"xen").hexdigest()
    sums = parse_sha256sums((tmp_path / "SHA256SUMS").read_text())
    assert set(sums) == set(parsed.checksums) | {".treeinfo"}
    assert sums[".treeinfo"] == hashlib.sha256((tmp_path / ".treeinfo").read_bytes()).hexdigest()
    before = (tmp_path / "SHA256SUMS").read_bytes()
    write_metadata(tmp_path, info(checksums={}))
    assert (tmp_path / "SHA256SUMS").read_bytes() == before


def test_release_file_records_name_and_version() -> None:
    text = release_text("0.2.0", "3f2a9c01b7d4", "6.12.57+deb12-amd64", "4.17.5+72-g01140da4e8-1")
    lines = text.splitlines()
    assert "NAME=netinstall" in lines
    assert "VERSION=0.2.0" in lines
    assert "KERNEL_RELEASE=6.12.57+deb12-amd64" in lines
    assert release_text("1.0 beta", "b", "k", "x").splitlines()[1] == 'VERSION="1.0 beta"'
