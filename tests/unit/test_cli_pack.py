"""``netinstall pack build`` through click's runner: what DIR holds, replacing, input errors."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree

from hypervisor_payload.checksums import parse_sha256sums
from hypervisor_payload.packs import write_repository_list
from hypervisor_payload.repo import write_metadata
from hypervisor_payload.treeinfo import TreeInfo, parse_treeinfo
from installer_core.payload import Fetcher, packs_at
from netinstall.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "packs_example"


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["pack", "build", *map(str, args)])
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


def source(tmp_path: Path, name: str, version: str = "1.0", script: str = "echo hi\n") -> Path:
    """A pack source like the example's, with another name, version or install script."""
    where = tmp_path / "sources" / f"{name}-{version}"
    shutil.copytree(EXAMPLE, where)
    (where / "pack.toml").write_text(
        f'name = "{name}"\nversion = "{version}"\nbuild = "1"\ndescription = "test pack"\n'
    )
    (where / "install.sh").write_text(f"#!/bin/sh\n{script}")
    return where


def listed(into: Path) -> list[str]:
    return (into / "XS-REPOSITORY-LIST").read_text().splitlines()


def test_example_pack_is_built_into_a_new_directory(tmp_path: Path) -> None:
    into = tmp_path / "files" / "drivers"
    code, out, err = run(EXAMPLE, "--into", into)
    assert (code, err) == (0, "")
    assert out == f"example 1.0 (build 1): 2 files in {into / 'packages.example'}\n"
    assert listed(into) == ["packages.example"]
    pack = into / "packages.example"
    identity = etree.parse(pack / "XS-REPOSITORY").getroot()
    assert (identity.get("name"), identity.get("version"), identity.get("product")) == (
        "example",
        "1.0",
        "netinstall",
    )
    entries = etree.parse(pack / "XS-PACKAGES").getroot().findall("package")
    assert [e.text for e in entries] == ["example-root.tar", "install.sh"]
    for entry in entries:
        data = (pack / str(entry.text)).read_bytes()
        assert int(entry.get("size", "-1")) == len(data)
        assert entry.get("sha256") == hashlib.sha256(data).hexdigest()
    assert not (into / ".treeinfo").exists()


def test_the_directory_reads_as_a_driver_source(tmp_path: Path) -> None:
    into = tmp_path / "drivers"
    assert run(EXAMPLE, "--into", into)[0] == 0

    def read(url: str) -> bytes:
        return Path(url.removeprefix("file://")).read_bytes()

    fetcher = Fetcher(read=read, save=lambda url, target: None)
    (pack,) = packs_at(f"file://{into}/", fetcher, optional_list=False)
    assert (pack.name, pack.url) == ("example", f"file://{into}/packages.example/")
    assert [f.file for f in pack.files] == ["example-root.tar", "install.sh"]


def test_rebuilding_replaces_the_pack_and_keeps_the_others(tmp_path: Path) -> None:
    into = tmp_path / "drivers"
    assert run(source(tmp_path, "other"), "--into", into)[0] == 0
    assert run(source(tmp_path, "example"), "--into", into)[0] == 0
    newer = source(tmp_path, "example", version="2.0", script="echo newer\n")
    code, out, _ = run(newer, "--into", into)
    assert code == 0
    assert out.startswith("example 2.0 (build 1): 2 files in ")
    assert listed(into) == ["packages.other", "packages.example"]
    pack = into / "packages.example"
    assert 'version="2.0"' in (pack / "XS-REPOSITORY").read_text()
    script = (pack / "install.sh").read_bytes()
    assert script == b"#!/bin/sh\necho newer\n"
    assert f'size="{len(script)}"' in (pack / "XS-PACKAGES").read_text()
    assert 'version="1.0"' in (into / "packages.other" / "XS-REPOSITORY").read_text()


def test_several_sources_in_one_run(tmp_path: Path) -> None:
    into = tmp_path / "drivers"
    code, out, _ = run(EXAMPLE, source(tmp_path, "second"), "--into", into)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["example", "second"]
    assert listed(into) == ["packages.example", "packages.second"]


def test_a_full_repository_gets_its_treeinfo_written_again(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "boot").mkdir(parents=True)
    for name in ("boot/xen.gz", "boot/vmlinuz", "boot/initrd.img", "dom0-rootfs.tar.zst"):
        (repo / name).write_bytes(name.encode())
    write_repository_list(repo, [])
    files = ("boot/vmlinuz", "boot/initrd.img", "boot/xen.gz", "dom0-rootfs.tar.zst")
    write_metadata(repo, TreeInfo("0.1.0", "b1", *files, "zstd", {}))
    code, out, _ = run(EXAMPLE, "--into", repo)
    assert code == 0
    assert out.startswith("example 1.0 (build 1): 2 files in ")
    assert listed(repo) == ["packages.example"]
    info = parse_treeinfo((repo / ".treeinfo").read_text())
    assert "packages.example/install.sh" in info.checksums
    assert "packages.example/install.sh" in parse_sha256sums((repo / "SHA256SUMS").read_text())


def _bad_toml(tmp_path: Path) -> Path:
    where = source(tmp_path, "bad")
    (where / "pack.toml").write_text('name = "bad"\nversion = 1.0\n')
    return where


def _unparsable_toml(tmp_path: Path) -> Path:
    where = source(tmp_path, "bad")
    (where / "pack.toml").write_text("name = \n")
    return where


def _no_toml(tmp_path: Path) -> Path:
    where = source(tmp_path, "bad")
    (where / "pack.toml").unlink()
    return where


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "nothing", "nothing: no such directory"),
        (_no_toml, "pack.toml is missing"),
        (_bad_toml, 'pack.toml needs version = "..."'),
        (_unparsable_toml, "pack.toml: "),
        (lambda tmp: EXAMPLE / "pack.toml", "pack.toml: is not a directory"),
    ],
    ids=["missing", "no-pack-toml", "bad-pack-toml", "unparsable-pack-toml", "a-file"],
)
def test_bad_sources_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, make: object, message: str
) -> None:
    assert callable(make)
    into = tmp_path / "drivers"
    code, out, err = run(EXAMPLE, make(tmp_path), "--into", into)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert err.startswith("netinstall: pack source ")
    assert message in err
    assert not into.exists()


def test_two_sources_of_one_pack_are_refused(tmp_path: Path) -> None:
    code, _, err = run(EXAMPLE, source(tmp_path, "example"), "--into", tmp_path / "drivers")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "both build the pack example" in err


def test_into_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run(EXAMPLE, "--into", tmp_path / "file")
    assert code == 2
    assert "is a file" in err
    assert (tmp_path / "file").read_text() == "x"


def test_a_broken_pack_list_in_dir_is_one_line(tmp_path: Path) -> None:
    into = tmp_path / "drivers"
    into.mkdir()
    (into / "XS-REPOSITORY-LIST").write_text("../elsewhere\n")
    code, _, err = run(EXAMPLE, "--into", into)
    assert code == 2
    assert err == "netinstall: XS-REPOSITORY-LIST line 1: '../elsewhere' is not a directory here\n"
    assert not (into / "packages.example").exists()


def test_an_unwritable_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run(EXAMPLE, "--into", tmp_path / "file" / "drivers")
    assert code == 2
    assert err.startswith(f"netinstall: cannot build into {tmp_path / 'file' / 'drivers'}: ")
    assert len(err.splitlines()) == 1
