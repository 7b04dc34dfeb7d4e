"""Supplemental packs: the example pack built into a temporary repository and read back."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import pytest

from hypervisor_payload.checksums import parse_sha256sums
from hypervisor_payload.packs import (
    PACK_MTIME,
    PACKAGES_FILE,
    REPOSITORY_FILE,
    REPOSITORY_LIST,
    PackError,
    build_pack,
    parse_repository_list,
    read_pack,
    read_packs,
    write_repository_list,
)
from hypervisor_payload.repo import add_packs, write_metadata
from hypervisor_payload.treeinfo import TreeInfo, parse_treeinfo

EXAMPLE = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "packs_example"


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    return repo


def test_example_pack_builds_and_reads_back(repository: Path) -> None:
    pack = build_pack(EXAMPLE, repository)
    write_repository_list(repository, [pack])
    assert (repository / REPOSITORY_LIST).read_text() == "packages.example\n"
    (again,) = read_packs(repository)
    assert again == pack
    assert (pack.directory, pack.name, pack.product, pack.version, pack.build) == (
        "packages.example",
        "example",
        "netinstall",
        "1.0",
        "1",
    )
    assert pack.originator == "netinstall"
    assert "configuration file" in pack.description
    assert [(f.type, f.file) for f in pack.files] == [
        ("tar", "example-root.tar"),
        ("script", "install.sh"),
    ]
    for entry in pack.files:
        data = (repository / pack.directory / entry.file).read_bytes()
        assert entry.size == len(data)
        assert entry.sha256 == hashlib.sha256(data).hexdigest()


def test_example_tarball_holds_files_only_owned_by_root(repository: Path) -> None:
    pack = build_pack(EXAMPLE, repository)
    with tarfile.open(repository / pack.directory / "example-root.tar") as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == ["etc/netinstall/packs/example.conf"]
    (member,) = members
    assert (member.uid, member.gid, member.uname, member.mode) == (0, 0, "root", 0o644)
    assert member.mtime == PACK_MTIME
    script = repository / pack.directory / "install.sh"
    assert script.stat().st_mode & 0o777 == 0o755


def test_pack_build_is_byte_reproducible(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    copy = tmp_path / "source"
    shutil.copytree(EXAMPLE, copy)
    build_pack(EXAMPLE, first)
    (copy / "root/etc/netinstall/packs/example.conf").touch()  # a new mtime changes nothing
    build_pack(copy, second)
    for name in (REPOSITORY_FILE, PACKAGES_FILE, "example-root.tar", "install.sh"):
        assert (first / "packages.example" / name).read_bytes() == (
            second / "packages.example" / name
        ).read_bytes(), name


def test_metadata_is_xenserver_style_xml(repository: Path) -> None:
    pack = build_pack(EXAMPLE, repository)
    text = (repository / pack.directory / REPOSITORY_FILE).read_text()
    assert text.startswith("<?xml version='1.0' encoding='UTF-8'?>\n<repository ")
    assert 'originator="netinstall" name="example" product="netinstall"' in text
    assert "<description>" in text
    packages = (repository / pack.directory / PACKAGES_FILE).read_text()
    assert 'type="tar" root="/"' in packages
    assert ">install.sh</package>" in packages


def test_tampered_file_is_refused(repository: Path) -> None:
    pack = build_pack(EXAMPLE, repository)
    script = repository / pack.directory / "install.sh"
    script.write_bytes(script.read_bytes().replace(b"installed", b"INSTALLED"))
    with pytest.raises(PackError, match=r"sha256 mismatch for install.sh"):
        read_pack(repository / pack.directory)
    read_pack(repository / pack.directory, verify=False)
    script.write_bytes(b"short")
    with pytest.raises(PackError, match=r"install.sh has the wrong size"):
        read_pack(repository / pack.directory)
    script.unlink()
    with pytest.raises(PackError, match=r"install.sh is missing"):
        read_pack(repository / pack.directory)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (REPOSITORY_FILE, 'product="netinstall"', 'product="XenServer"', "not for netinstall"),
        (REPOSITORY_FILE, ' version="1.0"', "", "needs a version= attribute"),
        (REPOSITORY_FILE, 'name="example"', 'name="other"', "names it 'other'"),
        (REPOSITORY_FILE, "</repository>", "", "not well-formed XML"),
        (PACKAGES_FILE, 'type="script"', 'type="rpm"', "type='rpm'"),
        (PACKAGES_FILE, ">install.sh<", ">../install.sh<", "not a plain file name"),
        (PACKAGES_FILE, 'root="/"', 'root="etc"', "expected an absolute path"),
        (PACKAGES_FILE, "<packages>", "<packages><rpm/>", "unexpected <rpm>"),
    ],
)
def test_bad_metadata_is_refused(
    repository: Path, file: str, old: str, new: str, message: str
) -> None:
    pack = build_pack(EXAMPLE, repository)
    _edit(repository / pack.directory / file, old, new)
    with pytest.raises(PackError, match=message):
        read_pack(repository / pack.directory)


def test_missing_metadata_file_is_named(repository: Path) -> None:
    pack = build_pack(EXAMPLE, repository)
    (repository / pack.directory / PACKAGES_FILE).unlink()
    with pytest.raises(PackError, match=r"XS-PACKAGES is missing"):
        read_pack(repository / pack.directory)


def test_entities_are_not_expanded(repository: Path) -> None:
    pack = build_pack(EXAMPLE, repository)
    path = repository / pack.directory / REPOSITORY_FILE
    text = path.read_text().replace(
        "<repository ", '<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n<repository ', 1
    )
    path.write_text(text.replace("<description>", "<description>&e;"))
    assert "root:" not in read_pack(repository / pack.directory).description


def test_repository_list_parsing() -> None:
    assert parse_repository_list("") == ()
    assert parse_repository_list("packages.a\n\n# comment\npackages.b  # why\n") == (
        "packages.a",
        "packages.b",
    )
    for bad in ("/etc", "../up", "."):
        with pytest.raises(PackError, match="line 1"):
            parse_repository_list(bad + "\n")


def test_no_list_means_no_packs_and_empty_list_is_written(repository: Path) -> None:
    assert read_packs(repository) == ()
    write_repository_list(repository, [])
    assert (repository / REPOSITORY_LIST).read_bytes() == b""
    assert read_packs(repository) == ()


def test_bad_sources_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    with pytest.raises(PackError, match=r"pack\.toml is missing"):
        build_pack(source, tmp_path / "repo")
    (source / "pack.toml").write_text('name = "Bad Name"\nversion = "1"\nbuild = "1"\n')
    with pytest.raises(PackError, match=r'needs description = "\.\.\."'):
        build_pack(source, tmp_path / "repo")
    (source / "pack.toml").write_text(
        'name = "Bad Name"\nversion = "1"\nbuild = "1"\ndescription = "d"\n'
    )
    with pytest.raises(PackError, match="is not a pack name"):
        build_pack(source, tmp_path / "repo")
    (source / "pack.toml").write_text(
        'name = "empty"\nversion = "1"\nbuild = "1"\ndescription = "d"\nextra = 1\n'
    )
    with pytest.raises(PackError, match="unknown keys extra"):
        build_pack(source, tmp_path / "repo")
    (source / "pack.toml").write_text(
        'name = "empty"\nversion = "1"\nbuild = "1"\ndescription = "d"\n'
    )
    with pytest.raises(PackError, match="nothing to pack"):
        build_pack(source, tmp_path / "repo")


def test_debs_are_listed_first(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(EXAMPLE, source)
    (source / "debs").mkdir()
    (source / "debs" / "hello_1.0_all.deb").write_bytes(b"!<arch>\nnot really a deb\n")
    pack = build_pack(source, tmp_path / "repo")
    first = pack.files[0]
    assert (first.type, first.label, first.file) == (
        "deb",
        "hello",
        "hello_1.0_all.deb",
    )


def test_add_packs_to_a_built_repository(repository: Path) -> None:
    (repository / "boot").mkdir()
    for name in ("boot/xen.gz", "boot/vmlinuz", "boot/initrd.img", "dom0-rootfs.tar.zst"):
        (repository / name).write_bytes(name.encode())
    write_repository_list(repository, [])
    write_metadata(
        repository,
        TreeInfo(
            "0.1.0",
            "b1",
            "boot/vmlinuz",
            "boot/initrd.img",
            "boot/xen.gz",
            "dom0-rootfs.tar.zst",
            "zstd",
            {},
        ),
    )
    info = add_packs(repository, [EXAMPLE])
    assert (repository / REPOSITORY_LIST).read_text() == "packages.example\n"
    assert parse_treeinfo((repository / ".treeinfo").read_text()) == info
    assert "packages.example/install.sh" in info.checksums
    assert "packages.example/XS-PACKAGES" in info.checksums
    sums = parse_sha256sums((repository / "SHA256SUMS").read_text())
    assert set(sums) == {*info.checksums, ".treeinfo"}
    assert add_packs(repository, [EXAMPLE]) == info  # the same pack again: nothing changes
    assert (repository / REPOSITORY_LIST).read_text() == "packages.example\n"
