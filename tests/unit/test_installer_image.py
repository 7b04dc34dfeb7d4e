"""The pure parts of the installer image: cpio writer, our archive, modules, self-test."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from common import cpio
from common.cpio import Entry, read_members
from images import installer, installer_root
from images.context import BuildContext
from images.debian import Mirror
from images.progress import Progress
from installer_core import __main__ as core_main
from installer_core import selftest


def _archive(entries: list[Entry]) -> bytes:
    stream = io.BytesIO()
    cpio.write(entries, stream)
    return stream.getvalue()


def test_cpio_round_trip_keeps_names_modes_and_device_numbers() -> None:
    data = _archive(
        [
            cpio.directory("etc", 100),
            cpio.regular("etc/hostname", b"installer\n", 100),
            cpio.char_device("dev/console", 5, 1, 100),
            Entry("bin", stat.S_IFLNK | 0o777, b"usr/bin", mtime=100),
        ]
    )
    assert len(data) % 4 == 0
    members = {m.name: m for m in read_members(data)}
    assert set(members) == {"etc", "etc/hostname", "dev/console", "bin"}
    assert stat.S_ISDIR(members["etc"].mode)
    assert members["etc/hostname"].size == len(b"installer\n")
    assert stat.S_ISCHR(members["dev/console"].mode)
    assert members["bin"].size == len(b"usr/bin")
    assert {m.mtime for m in members.values()} == {100}
    console = data.index(b"dev/console") - 110
    assert data[console + 6 + 8 * 9 : console + 6 + 8 * 11] == b"0000000500000001"


def test_cpio_hard_links_share_an_inode_and_the_last_carries_the_data() -> None:
    data = _archive(
        [
            Entry("a", stat.S_IFREG | 0o755, b"payload", link_group=0),
            Entry("b", stat.S_IFREG | 0o644, b"other"),
            Entry("c", stat.S_IFREG | 0o755, b"payload", link_group=0),
        ]
    )
    members = {m.name: m for m in read_members(data)}
    assert members["a"].ino == members["c"].ino != members["b"].ino
    assert (members["a"].nlink, members["c"].nlink) == (2, 2)
    assert (members["a"].size, members["c"].size) == (0, len(b"payload"))


def test_concatenated_archives_read_as_one_listing() -> None:
    first = _archive([cpio.regular("one", b"1", 0)])
    second = _archive([cpio.regular("two", b"22", 0)])
    assert [m.name for m in read_members(first + b"\0" * 4 + second)] == ["one", "two"]


def test_tree_entries_are_sorted_with_links_and_owners(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/perl").write_bytes(b"#!perl")
    os.link(tmp_path / "usr/bin/perl", tmp_path / "usr/bin/perl5")
    (tmp_path / "bin").symlink_to("usr/bin")
    entries = list(cpio.tree_entries(tmp_path, mtime=7))
    assert [e.name for e in entries] == ["bin", "usr", "usr/bin", "usr/bin/perl", "usr/bin/perl5"]
    assert entries[0].data == b"usr/bin"
    assert entries[3].link_group == entries[4].link_group is not None
    assert {e.mtime for e in entries} == {7}
    members = {m.name: m for m in read_members(_archive(entries))}
    assert members["usr/bin/perl"].ino == members["usr/bin/perl5"].ino


def test_our_archive_is_byte_reproducible_and_owned_by_root() -> None:
    entries = installer.overlay_entries(installer.overlay_files(), 1704067200)
    first, second = (
        _archive(entries),
        _archive(installer.overlay_entries(installer.overlay_files(), 1704067200)),
    )
    assert first == second
    members = {m.name: m for m in read_members(first)}
    assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 1704067200)}
    assert members["init"].mode == stat.S_IFREG | 0o755
    assert stat.S_ISCHR(members["dev/console"].mode)
    site = installer.PACKAGES_DIR
    for name in (
        f"{site}/installer_core/__main__.py",
        f"{site}/installer_core/selftest.py",
        f"{site}/answerfile/answerfile.rng",
        f"{site}/answerfile/examples/fresh.xml",
        f"{site}/partitioning/planner.py",
        "etc/netinstall/modules",
        "etc/netinstall/modules-hardware",
        "etc/netinstall/modules-san",
    ):
        assert name in members, name
    assert f"{site}/common/errors.py" in members
    assert f"{site}/common/process.py" in members
    assert not any(n.startswith(f"{site}/netinstall/") for n in members)  # the CLI stays out
    assert not any("__pycache__" in name for name in members)  # write_overlay adds them
    names = list(members)
    assert names.index(f"{site}/answerfile") < names.index(f"{site}/answerfile/answerfile.rng")


def test_byte_code_goes_where_the_images_python_looks() -> None:
    site = installer.PACKAGES_DIR
    assert installer.pyc_name(f"{site}/common/errors.py") == (
        f"{site}/common/__pycache__/errors.cpython-311.pyc"
    )
    sources = installer.package_sources()
    assert f"{site}/installer_core/__main__.py" in sources
    assert all(name.endswith(".py") for name in sources)
    assert not any(name.startswith(f"{site}/netinstall/") for name in sources)


def test_byte_compile_runs_a_fresh_bounded_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(argv: list[str], **kwargs: Any) -> None:
        seen.update(argv=argv, **kwargs)
        (Path(argv[-1]) / "x/__pycache__").mkdir(parents=True)
        (Path(argv[-1]) / f"x/__pycache__/a.{installer.IMAGE_CACHE_TAG}.pyc").write_bytes(b"pyc")

    monkeypatch.setattr(installer, "run", fake_run)
    monkeypatch.setattr(installer.sys.implementation, "cache_tag", installer.IMAGE_CACHE_TAG)
    compiled = installer.byte_compile({"x/a.py": tmp_path / "a.py"})
    assert compiled == {f"x/__pycache__/a.{installer.IMAGE_CACHE_TAG}.pyc": b"pyc"}
    assert seen["timeout"] == installer.BYTE_COMPILE_TIMEOUT == 300.0
    assert seen["env"]["PYTHONHASHSEED"] == "0"
    assert seen["argv"][1:4] == ["-S", "-s", "-B"]
    monkeypatch.setattr(installer.sys.implementation, "cache_tag", "cpython-399")
    assert installer.byte_compile({"x/a.py": tmp_path / "a.py"}) == {}  # compiled at boot


def test_epoch_follows_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    assert installer.epoch() == 1234
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert installer.epoch() == installer.DEFAULT_EPOCH


MODULES_DEP = """\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/lib/crc16.ko.xz:
kernel/fs/jbd2/jbd2.ko.xz:
kernel/drivers/md/dm-mod.ko.xz:
kernel/drivers/xen/xen-evtchn.ko.xz:
kernel/net/bridge/bridge.ko.xz: kernel/net/llc/llc.ko.xz
"""


def test_module_closure_takes_dependencies_and_skips_builtins() -> None:
    dependencies = installer_root.module_dependencies(MODULES_DEP)
    builtin = ["kernel/drivers/virtio/virtio_pci.ko"]
    keep = installer_root.module_closure(
        ["ext4", "dm_mod", "xen-evtchn", "virtio_pci"], dependencies, builtin
    )
    assert keep == {
        "kernel/fs/ext4/ext4.ko.xz",
        "kernel/lib/crc16.ko.xz",
        "kernel/fs/jbd2/jbd2.ko.xz",
        "kernel/drivers/md/dm-mod.ko.xz",
        "kernel/drivers/xen/xen-evtchn.ko.xz",
    }
    assert installer_root.module_name("kernel/drivers/md/dm-mod.ko.xz") == "dm_mod"


def test_module_closure_refuses_unknown_modules() -> None:
    with pytest.raises(Exception, match="no module named nosuch"):
        installer_root.module_closure(["nosuch"], {}, [])


def _context(
    tmp_path: Path, versions: dict[str, str], archive: str = "http://a/debian"
) -> BuildContext:
    return BuildContext(
        out=tmp_path,
        cache=tmp_path,
        mirror=Mirror(archive, "http://a/debian-security"),
        payload_version="0",
        progress=Progress(io.StringIO()),
        versions=versions,
    )


def test_root_key_follows_versions_and_mirror(tmp_path: Path) -> None:
    versions = dict.fromkeys(installer.PACKAGES, "1")
    args = (installer.INCLUDE, installer.EXTRA, installer.PACKAGES)
    key = installer_root.root_key(_context(tmp_path, versions), *args)
    assert key == installer_root.root_key(_context(tmp_path, dict(versions)), *args)
    newer = {**versions, "python3": "2"}
    assert key != installer_root.root_key(_context(tmp_path, newer), *args)
    assert key != installer_root.root_key(_context(tmp_path, versions, "http://b/debian"), *args)
    assert installer_root.base_key(key, "k.deb", "1", 9) != installer_root.base_key(
        key, "k.deb", "1", 19
    )


def test_packages_name_the_kernel_and_every_listed_package() -> None:
    assert "linux-image-6.12-amd64" in installer.PACKAGES
    assert set(installer.INCLUDE) | set(installer.EXTRA) <= set(installer.PACKAGES)
    assert {"busybox", "tzdata", "xen-utils-4.17", "open-iscsi"} <= set(installer.PACKAGES)
    assert installer.OUTPUTS == ("vmlinuz", "install.img")


def test_init_is_a_busybox_script_that_never_exits() -> None:
    text = (installer.FILES / "init").read_text()
    assert text.startswith("#!/bin/busybox sh\n")
    assert "python3 -m installer_core --selftest" in text
    assert ">/proc/sysrq-trigger" in text
    assert text.rstrip().endswith('shell_forever "/init reached its end"')
    assert os.access(installer.FILES / "init", os.X_OK)


def _sys_block(tmp_path: Path, disks: dict[str, int]) -> Path:
    for name, sectors in disks.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "size").write_text(f"{sectors}\n")
    return tmp_path


def test_block_disks_skip_loop_ram_and_empty_devices(tmp_path: Path) -> None:
    sys_block = _sys_block(
        tmp_path, {"vda": 16777216, "loop0": 100, "ram0": 100, "zram0": 100, "sr0": 0, "sda": 8}
    )
    found = selftest.block_disks(sys_block)
    assert found == [selftest.Disk("sda", 4096), selftest.Disk("vda", 8 * 2**30)]
    assert selftest.human(8 * 2**30) == "8.6 GB"


def test_selftest_prints_disks_and_the_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "vda"
    with image.open("wb") as stream:
        stream.truncate(64 * 2**20)
    monkeypatch.setattr(selftest, "block_disks", lambda: [selftest.Disk("vda", 64 * 2**20)])
    monkeypatch.setattr(selftest, "xen_memory", lambda: None)
    out = io.StringIO()
    assert selftest.run(out, dev=tmp_path) == 0
    lines = out.getvalue().splitlines()
    assert "disk vda 67.1 MB: no partition table" in lines
    assert "xen: not running as Xen's dom0" in lines
    assert lines[-1] == selftest.MARKER


def test_selftest_reports_a_failure_without_the_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[str]:
        raise ModuleNotFoundError("No module named 'parted'")

    monkeypatch.setattr(selftest, "import_all", broken)
    out = io.StringIO()
    assert selftest.run(out) == 1
    assert selftest.MARKER not in out.getvalue()
    assert "No module named 'parted'" in out.getvalue()


def test_without_selftest_the_core_says_nothing_was_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert core_main.main([]) == core_main.NOT_YET
    assert "nothing was written" in capsys.readouterr().err


def test_xl_info_total_memory_is_read() -> None:
    text = "host                   : installer\ntotal_memory           : 2047\nfree_memory : 900\n"
    assert selftest.xl_total_memory(text) == 2047
    with pytest.raises(ValueError, match="total_memory"):
        selftest.xl_total_memory("host : x\n")


def test_xen_memory_is_none_outside_dom0(tmp_path: Path) -> None:
    assert selftest.xen_memory(tmp_path / "missing") is None
    (tmp_path / "capabilities").write_text("")
    assert selftest.xen_memory(tmp_path / "capabilities") is None


def test_remove_tree_refuses_a_tree_with_mounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "root"
    (tree / "dev").mkdir(parents=True)
    monkeypatch.setattr(installer_root, "_mounts_under", lambda _tree: [str(tree / "dev")])
    with pytest.raises(Exception, match="still has mounts"):
        installer_root.remove_tree(tree)
    assert (tree / "dev").is_dir()
    monkeypatch.setattr(installer_root, "_mounts_under", lambda _tree: [])
    installer_root.remove_tree(tree)
    assert not tree.exists()


def test_prune_keeps_the_newest_cache_files(tmp_path: Path) -> None:
    names = [f"installer-base-{n}.cpio.zst" for n in "abcde"]
    for age, name in enumerate(names):  # a is the oldest
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1000 + age, 1000 + age))
    (tmp_path / "installer-f.tar").write_bytes(b"")  # another pattern: never touched
    keep = tmp_path / names[0]  # the one just built or used, whatever its age
    installer_root._prune(tmp_path, "installer-base-*.cpio.zst", keep, 3)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [names[0], names[3], names[4], "installer-f.tar"]
    installer_root._prune(tmp_path, "installer-base-*.cpio.zst", keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == [names[0], "installer-f.tar"]


def test_init_loads_only_what_nothing_else_loads() -> None:
    lists = (
        installer_root.EAGER_MODULES,
        installer_root.HARDWARE_MODULES,
        installer_root.SAN_MODULES,
        installer_root.ON_USE_MODULES,
    )
    assert sum(len(names) for names in lists) == len(set(installer_root.MODULES))  # disjoint
    files = installer.overlay_files()
    listed = {
        name: set(files[f"etc/netinstall/{name}"][0].decode().split())
        for name in ("modules", "modules-hardware", "modules-san")
    }
    assert listed["modules"] == set(installer_root.EAGER_MODULES)
    assert listed["modules-san"] == {"iscsi_ibft", "iscsi_tcp", "dm_multipath", "dm_round_robin",
                                     "dm_service_time", "scsi_dh_alua", "scsi_dh_rdac",
                                     "scsi_dh_emc"}  # fmt: skip
    assert not any("nfs" in name for names in listed.values() for name in names)
    # The ESP's and EFI variables' modules load when mounted: a BIOS install never does.
    assert not {"vfat", "nls_cp437", "efivarfs"} & set().union(*listed.values())
    assert {"vfat", "nls_ascii", "nls_cp437", "efivarfs"} <= set(installer_root.ON_USE_MODULES)
    init = files["init"][0].decode()
    assert "modprobe -q -a $modules && return 0" in init  # one modprobe a list
    assert "udevadm trigger --type=devices --action=add" in init
    assert "--type=subsystems" not in init  # no rule of use to the installer needs it
    assert '[ "$UDEV" = 1 ] || load_modules /etc/netinstall/modules-hardware' in init
    assert '[ "$SAN" = 0 ] || load_modules /etc/netinstall/modules-san' in init
