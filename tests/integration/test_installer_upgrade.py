"""Upgrade and restore on a loop device (SPEC §7): the step functions on a real disk.

A 50 GiB sparse image gets the new GPT layout (the fresh install's partition and
mkfs steps) and a tiny netinstall 0.1.0 on root: release file, first-boot data
and state with an SR uuid, ssh host keys, a host name, and files that test the
copy (an owner by number, a hard link, an extended attribute, an ACL, a device
node where this host allows one). A marker is written into the SR partition
with dd. The upgrade steps that need no network and no GRUB run with a tiny
payload 0.2.0; then the restore steps bring 0.1.0 back. What the disk holds is
read back by mounting each filesystem read-only and with blkid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from answerfile.model import AnswerFile, Disk, Mode, PrimaryDisk, Source, SourceType
from common.firmware import Firmware
from common.process import run
from installer_core import backup, bootloader, carry, disk, existing, mounts, payload, planning
from installer_core.network import Nic
from installer_core.plan import InstallPlan
from partitioning import facts
from partitioning.model import GiB, MiB, Use
from tests.integration.test_installer_target import _out
from tests.unit.test_installer_fakes import INSTALL_KEY, answer_for, make_plan
from tests.unit.test_installer_upgrade import write

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mount)"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("dd", "zstd", "cp", "grub-editenv")),
        reason="dd, zstd, cp or grub-editenv is missing",
    ),
]

CMDLINE = "install netinstall.server=http://10.0.2.2:8080 netinstall.token=t0k-new " + (
    "BOOTIF=01-52-54-00-12-34-56"
)
SR_UUID = "5d0c3f7e-aaaa-4bbb-8ccc-0123456789ab"
SR_MARKER_OFFSET = 3 * MiB  # inside partition 3, where dd writes the marker
SR_CHECKED = 8 * MiB  # the SR bytes compared before and after
XATTR = ("user.netinstall", b"kept")
ACL = "system.posix_acl_access"


def acl_bytes(user: int) -> bytes:
    """A POSIX ACL xattr (version 2): owner rw-, user ``user`` r--, group r--, mask r--."""
    entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 4, user), (0x04, 4, 0xFFFFFFFF)]
    entries += [(0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def old_installation(root: Path, sr_partuuid: str, root_uuid: str) -> bool:
    """netinstall 0.1.0 on the mounted root; True when a device node could be made."""
    write(root, "etc/netinstall-release", "NAME=netinstall\nVERSION=0.1.0\nBUILD=old\n")
    write(root, "etc/hostname", "xen-loop-old\n")
    write(root, "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\txen-loop-old\n")
    write(root, "etc/network/interfaces.d/xenbr0", "iface xenbr0 inet dhcp\n")
    write(root, "etc/ssh/ssh_host_ed25519_key", "OLD HOST KEY\n", 0o600)
    write(root, "etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 OLD\n")
    write(root, "etc/shadow", "root:$6$old$hash:19000:0:99999:7:::\n", 0o640)
    write(root, "etc/fstab", f"UUID={root_uuid}\t/\text4\terrors=remount-ro\t0 1\n")
    firstboot = {
        "server": "http://old:8080",
        "mac": "52:54:00:12:34:56",
        "payload_version": "0.1.0",
        "sr": {"type": "lvm", "devices": [f"/dev/disk/by-partuuid/{sr_partuuid}"]},
        "admin_interface": {"proto": "dhcp", "name": "eth0", "bridge": "xenbr0"},
        "hostname": "xen-loop-old",
    }
    write(root, "etc/netinstall/firstboot.json", json.dumps(firstboot), 0o600)
    write(root, "etc/netinstall/agent.json", '{"credential": "old"}', 0o600)
    write(root, "var/lib/netinstall/firstboot-state.json", json.dumps({"sr_uuid": SR_UUID}))
    write(root, "var/lib/netinstall/firstboot.done", "done\n")
    owned = write(root, "srv/owned", "by 1234\n", 0o640)
    os.chown(owned, 1234, 1234)
    os.link(owned, root / "srv/hardlink")
    os.setxattr(owned, *XATTR)
    os.setxattr(owned, ACL, acl_bytes(1234))
    try:
        os.mknod(root / "srv/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        return False
    return True


def payload_archive(tmp_path: Path) -> dict[str, Path]:
    """A tiny payload 0.2.0: the dom0 root archive and Xen, kernel and initrd."""
    tree = tmp_path / "payload-root"
    write(tree, "etc/netinstall-release", "NAME=netinstall\nVERSION=0.2.0\nBUILD=new\n")
    write(tree, "etc/hostname", "localhost\n")
    write(tree, "etc/shadow", "root:*:19500:0:99999:7:::\n", 0o640)
    write(tree, "etc/ssh/sshd_config", "# 0.2.0\n")
    write(tree, "var/log/README", "logs\n")
    archive = tmp_path / "dom0-rootfs.tar.zst"
    subprocess.run(
        ["tar", "--zstd", "--numeric-owner", "-cf", str(archive), "-C", str(tree), "."], check=True
    )
    files = {payload.ROOTFS_KEY: archive}
    for key in payload.BOOT_FILES:
        files[key] = write(tmp_path / "boot-files", Path(key).name, f"0.2.0 {key}\n")
    return files


@contextmanager
def looking_at(device: Path, where: Path) -> Iterator[Path]:
    """``device`` mounted read-only at ``where`` for a check."""
    with mounts.mounted(run, device, where, fstype="ext4", options="ro") as top:
        yield top


def sr_digest(device: Path) -> str:
    with device.open("rb") as stream:
        return hashlib.sha256(stream.read(SR_CHECKED)).hexdigest()


def uuid_of(device: Path) -> str:
    return _out("blkid", "-c", "/dev/null", "-s", "UUID", "-o", "value", str(device)).strip()


ETH0 = Nic("eth0", "52:54:00:12:34:56")


def planned(
    tmp_path: Path, answer: AnswerFile, name: str, found: planning.DiskFound
) -> InstallPlan:
    """The run's plan, its files under ``tmp_path/name``, its log started."""
    network = planning.NetworkFound(fetched_by=ETH0, nics=(ETH0,))
    plan = make_plan(tmp_path / name, answer, args=CMDLINE, disk=found, network=network)
    plan.paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    plan.paths.log_file.write_text(f"{name} log\n")
    return plan


def kept(answer: AnswerFile, tmp_path: Path, name: str) -> planning.DiskFound:
    """What the plan step reads for an upgrade or a restore: the disk, read-only."""
    work = tmp_path / name / "work"
    if answer.mode is Mode.UPGRADE:
        found = existing.find_installation(answer.existing_installation, Firmware.BIOS, work)
    else:
        found = existing.find_backup(answer.backup_disk, Firmware.BIOS, work)
    return planning.DiskFound(found.device, found.facts, None, found.table, found.existing)


def cleanup(tmp_path: Path) -> None:
    for name in ("fresh", "upgrade", "restore"):
        disk.unmount_target(tmp_path / name / "target", None)
        mounts.unmount_all(run, tmp_path / name / "work")


def test_upgrade_then_restore_on_a_loop_device(
    tmp_path: Path, loop_devices: None, attach: Callable[..., str]
) -> None:
    image = tmp_path / "disk.img"
    with image.open("wb") as out:
        out.truncate(50 * GiB)
    loop = Path(attach(image, read_only=False))
    fresh_answer = answer_for(primary_disk=PrimaryDisk(Disk(str(loop))), timezone="UTC")
    blank = planning.DiskFound(loop, facts.read_facts(loop, sr_has_vms=False))
    fresh = planned(tmp_path, fresh_answer, "fresh", blank)
    upgrade_answer = AnswerFile(
        mode=Mode.UPGRADE,
        existing_installation=Disk(str(loop)),
        sources=(Source(SourceType.URL, "http://repo.invalid/"),),
    )
    restore_answer = AnswerFile(mode=Mode.RESTORE, backup_disk=Disk(str(loop)))
    checks = tmp_path / "checks"
    try:
        # A fresh install's partition and mkfs steps, then netinstall 0.1.0 on root.
        disk.partition(fresh.disk)
        made = disk.make_filesystems(fresh.disk)
        parts = {use.value: device for use, device in fresh.disk.partitions.items()}
        root_uuid = made.uuids[Use.ROOT]
        assert made.sr_partuuid is not None
        with mounts.mounted(run, parts["root"], checks, fstype="ext4") as top:
            device_node = old_installation(top, made.sr_partuuid, root_uuid)
        marker = tmp_path / "sr-marker"
        marker.write_bytes(b"netinstall SR marker: VMs live here\n" * 100)
        subprocess.run(
            ["dd", f"if={marker}", f"of={parts['sr']}", "bs=1M", "seek=3", "conv=fsync,notrunc"],
            capture_output=True,
            check=True,
        )
        sr_before = sr_digest(parts["sr"])

        # The upgrade: its plan read from the disk, then every step but network, download,
        # packs and grub-install.
        up = planned(tmp_path, upgrade_answer, "upgrade", kept(upgrade_answer, tmp_path, "upgrade"))
        assert up.existing is not None
        assert (up.existing.version, up.existing.sr_uuid) == ("0.1.0", SR_UUID)
        files = payload_archive(tmp_path)
        target, work = up.paths.target, up.paths.work
        existing.check_layout(up.disk, up.firmware)
        backup.backup_root(up.disk, up.existing, work)
        saved = carry.save_settings(up.disk, work)
        new_uuid = backup.make_root(up.disk, up.existing, upgrade=True)
        disk.mount_target(target, up.disk)
        payload.extract_root(files, target)
        payload.install_boot_files(files, target)
        carry.carry_settings(up, saved, "0.2.0")
        bootloader.write_grub_config(target, new_uuid, run)
        disk.unmount_target(target, up.staging)
        disk.write_install_log(up.paths.log_file, up.disk, work)
        assert mounts.mounts_under(tmp_path) == []

        assert uuid_of(parts["root"]) == root_uuid
        assert sr_digest(parts["sr"]) == sr_before
        with looking_at(parts["backup"], checks) as top:
            held = json.loads((top / existing.MARKER).read_text())
            assert held["version"] == "0.1.0"
            assert held["build"] == "old"
            assert held["source_partition"] == str(parts["root"])
            assert held["source_uuid"] == root_uuid
            assert "VERSION=0.1.0" in (top / "etc/netinstall-release").read_text()
            owned = (top / "srv/owned").stat()
            assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (1234, 1234, 0o640)
            assert owned.st_ino == (top / "srv/hardlink").stat().st_ino
            assert owned.st_nlink == 2
            assert os.getxattr(top / "srv/owned", XATTR[0]) == XATTR[1]
            assert os.getxattr(top / "srv/owned", ACL) == acl_bytes(1234)
            if device_node:
                node = (top / "srv/null").stat()
                assert stat.S_ISCHR(node.st_mode)
                assert node.st_rdev == os.makedev(1, 3)
            else:
                print("mknod is not allowed here: the device node copy is not checked")
        with looking_at(parts["root"], checks) as top:
            assert "VERSION=0.2.0" in (top / "etc/netinstall-release").read_text()
            assert (top / "etc/hostname").read_text() == "xen-loop-old\n"
            assert (top / "etc/ssh/ssh_host_ed25519_key").read_text() == "OLD HOST KEY\n"
            assert (top / "etc/ssh/sshd_config").read_text() == "# 0.2.0\n"
            assert (top / "etc/shadow").read_text().startswith("root:$6$old$hash:")
            assert f"UUID={root_uuid}\t/\t" in (top / "etc/fstab").read_text()
            assert (top / "boot/vmlinuz").read_text() == "0.2.0 boot/vmlinuz\n"
            assert not (top / "srv/owned").exists()
            state = json.loads((top / existing.STATE).read_text())
            assert state == {"sr_uuid": SR_UUID, "done": False}
            first = json.loads((top / existing.FIRSTBOOT).read_text())
            assert (first["payload_version"], first["token"]) == ("0.2.0", INSTALL_KEY)
            assert first["sr"]["devices"] == [f"/dev/disk/by-partuuid/{made.sr_partuuid}"]
            assert not (top / carry.AGENT_CONFIG).exists()
            assert not (top / carry.FIRSTBOOT_DONE).exists()
            grub = (top / "boot/grub/grub.cfg").read_text()
            assert f"--set=root {root_uuid}" in grub
        with looking_at(parts["logs"], checks) as top:
            assert (top / "netinstall/install.log").read_text() == "upgrade log\n"
            assert not (top / planning.STAGING_DIR).exists()

        # The restore brings 0.1.0 back onto root, same UUID; the backup stays.
        down = planned(
            tmp_path, restore_answer, "restore", kept(restore_answer, tmp_path, "restore")
        )
        assert down.existing is not None
        assert down.existing.version == "0.1.0"
        target, work = down.paths.target, down.paths.work
        restored_uuid = backup.make_root(down.disk, down.existing, upgrade=False)
        backup.restore_root(down.disk, down.existing, work)
        disk.mount_target(target, down.disk)
        carry.restore_settings(down)
        bootloader.write_grub_config(target, restored_uuid, run)
        disk.unmount_target(target, down.staging)
        assert mounts.mounts_under(tmp_path) == []

        assert uuid_of(parts["root"]) == root_uuid
        assert sr_digest(parts["sr"]) == sr_before
        with looking_at(parts["root"], checks) as top:
            assert "VERSION=0.1.0" in (top / "etc/netinstall-release").read_text()
            assert not (top / existing.MARKER).exists()
            assert not (top / "etc/ssh/sshd_config").exists()  # 0.2.0's files are gone
            assert (top / "srv/owned").stat().st_ino == (top / "srv/hardlink").stat().st_ino
            assert os.getxattr(top / "srv/owned", ACL) == acl_bytes(1234)
            first = json.loads((top / existing.FIRSTBOOT).read_text())
            assert (first["payload_version"], first["token"]) == ("0.1.0", INSTALL_KEY)
            state = json.loads((top / existing.STATE).read_text())
            assert state == {"sr_uuid": SR_UUID, "done": False}
            assert not (top / carry.AGENT_CONFIG).exists()
            assert f"--set=root {root_uuid}" in (top / "boot/grub/grub.cfg").read_text()
        with looking_at(parts["backup"], checks) as top:
            assert json.loads((top / existing.MARKER).read_text())["version"] == "0.1.0"
    finally:
        cleanup(tmp_path)
        mounts.unmount_all(run, checks)
    assert mounts.mounts_under(tmp_path) == []
