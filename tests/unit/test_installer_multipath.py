"""installer_core.multipath: maps read from a sysfs tree, the path -> map step, dom0's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from answerfile.bootargs import parse_cmdline
from answerfile.model import AnswerFile, Disk, Mode
from common.cpio import read_members
from common.errors import InputError, NetinstallError
from installer_core import multipath, planning
from installer_core.install import steps_of
from partitioning.mkfs import partition_device
from tests.unit.test_installer_fakes import FakeRunner

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
    plain = multipath.disk_for(Path("/dev/sda"), "primary-disk", False, block)
    assert plain == (Path("/dev/sda"), None)
    device, found = multipath.disk_for(Path("/dev/sda"), "primary-disk", True, block)
    assert device == Path("/dev/mapper/mpatha")
    assert found is not None
    assert found.name == "mpatha"
    with pytest.raises(InputError, match=r"no multipath device holds it \(maps: mpatha over"):
        multipath.disk_for(Path("/dev/vda"), "primary-disk", True, block)


def test_no_map_at_all_is_one_sentence(tmp_path: Path) -> None:
    runner = FakeRunner()
    system = multipath.System(runner=runner, sys_block=sysfs(tmp_path / "b", maps=False),
                              etc=tmp_path / "etc")  # fmt: skip
    with pytest.raises(InputError, match="multipath found no multipath device"):
        multipath.start(system)
    assert runner.names()[:2] == ["multipath", "multipathd"]
    assert "find_multipaths greedy" in (tmp_path / "etc/multipath.conf").read_text()


def test_the_maps_are_built_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    system = multipath.System(runner=FakeRunner(), sys_block=sysfs(tmp_path / "b"),
                              etc=tmp_path / "etc")  # fmt: skip
    caplog.set_level("INFO")
    assert [m.name for m in multipath.start(system)] == ["mpatha"]
    assert "multipath maps: mpatha over sda, sdb" in caplog.text


def test_dom0_gets_the_wwid_and_the_name_in_root_and_initramfs(tmp_path: Path) -> None:
    found = multipath.MultipathMap("mpatha", f"mpath-{WWID}", ("sda", "sdb"))
    initrd = tmp_path / "root/boot/initrd.img"
    initrd.parent.mkdir(parents=True)
    initrd.write_bytes(b"\x28\xb5\x2f\xfd compressed")  # 15 bytes: padded to 16
    multipath.write_dom0_config(found, tmp_path / "root")
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
    found = multipath.MultipathMap("mpatha", f"mpath-{WWID}", ("sda",))
    with pytest.raises(NetinstallError, match=r"initrd\.img is missing"):
        multipath.write_dom0_config(found, tmp_path / "root")
    multipath.write_dom0_config(None, tmp_path / "plain")  # no map: nothing to write
    assert not (tmp_path / "plain").exists()


def test_map_partitions_are_named_as_kpartx_names_them() -> None:
    assert partition_device("/dev/mapper/mpatha", 3) == "/dev/mapper/mpatha-part3"
    assert partition_device("/dev/sda", 3) == "/dev/sda3"


def test_multipath_runs_after_iscsi_and_before_the_network() -> None:
    args = parse_cmdline("install use_ibft device_mapper_multipath=yes")
    names = [name for name, _weight in steps_of(args)]
    assert names[:3] == ["iscsi", "multipath", "network"]


@pytest.mark.parametrize(
    "answer",
    [
        AnswerFile(mode=Mode.UPGRADE, existing_installation=Disk("sda")),
        AnswerFile(mode=Mode.RESTORE, backup_disk=Disk("sda")),
    ],
)
def test_an_upgrade_on_a_multipath_device_is_refused_before_anything(answer: AnswerFile) -> None:
    with pytest.raises(InputError, match="on a multipath device is not supported yet"):
        planning.check_options(parse_cmdline("install device_mapper_multipath=yes"), answer)
