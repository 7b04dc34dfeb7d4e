"""installer_core.multipath: maps read from a sysfs tree, the path -> map step, dom0's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from answerfile.model import Mode
from common.cpio import read_members
from common.errors import InputError, NetinstallError
from installer_core import multipath
from installer_core.install import steps_for
from partitioning.mkfs import partition_device
from tests.unit.test_installer_fakes import FakeRunner, make_ctx

WWID = "3500c50015ea71ac0"


def sysfs(root: Path, *, maps: bool = True) -> Path:
    """sda and sdb, two paths of dm-0 (mpatha); vda, a disk without a map."""
    for disk in ("sda", "sdb", "vda"):
        (root / disk).mkdir(parents=True)
        (root / disk / "size").write_text("125829120\n")
    if maps:
        (root / "dm-0" / "dm").mkdir(parents=True)
        (root / "dm-0" / "dm" / "uuid").write_text(f"mpath-{WWID}\n")
        (root / "dm-0" / "dm" / "name").write_text("mpatha\n")
        for path in ("sda", "sdb"):
            (root / "dm-0" / "slaves" / path).mkdir(parents=True)
            (root / path / "holders" / "dm-0").mkdir(parents=True)
        (root / "dm-1" / "dm").mkdir(parents=True)  # an LVM volume: not a map
        (root / "dm-1" / "dm" / "uuid").write_text("LVM-abc\n")
        (root / "dm-1" / "dm" / "name").write_text("vg-lv\n")
    return root


def test_a_path_device_resolves_to_its_map(tmp_path: Path) -> None:
    block = sysfs(tmp_path / "block")
    found = multipath.holder(Path("/dev/sdb"), block)
    assert found == multipath.MultipathMap("mpatha", f"mpath-{WWID}", ("sda", "sdb"))
    assert found.device == Path("/dev/mapper/mpatha")
    assert found.partition_uuid_link(3) == f"/dev/disk/by-id/dm-uuid-part3-mpath-{WWID}"
    assert multipath.holder(Path("/dev/dm-0"), block) == found
    assert multipath.holder(Path("/dev/vda"), block) is None
    assert [m.name for m in multipath.all_maps(block)] == ["mpatha"]


def test_disk_for_follows_the_boot_argument(tmp_path: Path) -> None:
    block = sysfs(tmp_path / "block")
    plain = make_ctx(tmp_path)
    assert multipath.disk_for(plain, Path("/dev/sda"), "primary-disk", block) == Path("/dev/sda")
    ctx = make_ctx(tmp_path, "install device_mapper_multipath=yes")
    assert multipath.disk_for(ctx, Path("/dev/sda"), "primary-disk", block) == Path(
        "/dev/mapper/mpatha"
    )
    assert ctx.multipath is not None
    with pytest.raises(InputError, match=r"no multipath device holds it \(maps: mpatha over"):
        multipath.disk_for(ctx, Path("/dev/vda"), "primary-disk", block)


def test_no_map_at_all_is_one_sentence(tmp_path: Path) -> None:
    runner = FakeRunner()
    system = multipath.System(runner=runner, sys_block=sysfs(tmp_path / "b", maps=False),
                              etc=tmp_path / "etc")  # fmt: skip
    ctx = make_ctx(tmp_path, "install device_mapper_multipath=yes")
    with pytest.raises(InputError, match="multipath found no multipath device"):
        multipath.start(ctx, system)
    assert runner.names()[:2] == ["multipath", "multipathd"]
    assert "find_multipaths greedy" in (tmp_path / "etc/multipath.conf").read_text()


def test_the_maps_are_built_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    system = multipath.System(runner=FakeRunner(), sys_block=sysfs(tmp_path / "b"),
                              etc=tmp_path / "etc")  # fmt: skip
    caplog.set_level("INFO")
    multipath.start(make_ctx(tmp_path, "install device_mapper_multipath=yes"), system)
    assert "multipath maps: mpatha over sda, sdb" in caplog.text


def test_dom0_gets_the_wwid_and_the_name_in_root_and_initramfs(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "install device_mapper_multipath=yes")
    ctx.multipath = multipath.MultipathMap("mpatha", f"mpath-{WWID}", ("sda", "sdb"))
    initrd = tmp_path / "root/boot/initrd.img"
    initrd.parent.mkdir(parents=True)
    initrd.write_bytes(b"\x28\xb5\x2f\xfd compressed")  # 15 bytes: padded to 16
    multipath.write_dom0_config(ctx, tmp_path / "root")
    assert f"/{WWID}/" in (tmp_path / "root/etc/multipath/wwids").read_text()
    assert f"mpatha {WWID}" in (tmp_path / "root/etc/multipath/bindings").read_text()
    data = initrd.read_bytes()
    assert data[:16] == b"\x28\xb5\x2f\xfd compressed\0"
    members = {m.name: m for m in read_members(data[16:])}
    assert set(members) >= {"etc", "etc/multipath", "etc/multipath/wwids"}
    wwids = (tmp_path / "root/etc/multipath/wwids").read_bytes()
    assert members["etc/multipath/wwids"].size == len(wwids)
    assert wwids in data[16:]


def test_without_its_initramfs_dom0_would_not_find_the_map(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "install device_mapper_multipath=yes")
    ctx.multipath = multipath.MultipathMap("mpatha", f"mpath-{WWID}", ("sda",))
    with pytest.raises(NetinstallError, match=r"initrd\.img is missing"):
        multipath.write_dom0_config(ctx, tmp_path / "root")


def test_map_partitions_are_named_as_kpartx_names_them() -> None:
    assert partition_device("/dev/mapper/mpatha", 3) == "/dev/mapper/mpatha-part3"
    assert partition_device("/dev/sda", 3) == "/dev/sda3"


def test_multipath_runs_after_iscsi_and_before_the_network() -> None:
    names = [s.name for s in steps_for(Mode.FRESH, use_ibft=True, multipath=True)]
    assert names[:3] == ["iscsi", "multipath", "network"]


def test_an_upgrade_on_a_multipath_device_is_refused_before_anything(tmp_path: Path) -> None:
    from answerfile.model import AnswerFile, Disk
    from installer_core import checks

    ctx = make_ctx(tmp_path, "install device_mapper_multipath=yes")
    ctx.answer = AnswerFile(mode=Mode.UPGRADE, existing_installation=Disk("sda"))
    with pytest.raises(InputError, match="on a multipath device is not supported yet"):
        checks.check_disk(ctx, checks.Machine(runner=FakeRunner()))
