"""The installer's disk, payload, configure and boot loader steps on a loop device.

A 60 GiB sparse image is partitioned, formatted, mounted, populated from a
small fake dom0 archive and configured, then read back with util-linux and
debugfs, not with our code. grub-install for BIOS runs only where
``/usr/lib/grub/i386-pc`` exists (grub-pc-bin is not a host package); without
it the test says so and checks the rest, grub.cfg and grubenv included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from answerfile.bootargs import BootArgs
from answerfile.model import Disk, PasswordType, PrimaryDisk, RootPassword
from common.process import run
from installer_core import bootloader, configure, disk, mounts, payload, planning
from installer_core.network import Nic
from partitioning import facts
from partitioning.model import GiB, Use
from tests.unit.test_installer_fakes import answer_for, make_plan

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mount)"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("sfdisk", "debugfs", "zstd", "grub-editenv")),
        reason="sfdisk, debugfs, zstd or grub-editenv is missing",
    ),
]

DOM0 = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "dom0"
SHADOW = "root:*:19500:0:99999:7:::\ndaemon:*:19500:0:99999:7:::\n"
PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


def _out(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def fake_rootfs(tmp_path: Path) -> Path:
    """A tiny dom0 archive: passwd, shadow, hosts, a zoneinfo file, var/log, boot."""
    tree = tmp_path / "rootfs"
    for rel, text in {
        "etc/passwd": PASSWD,
        "etc/shadow": SHADOW,
        "etc/hosts": "127.0.0.1\tlocalhost\n",
        "etc/network/interfaces": "auto lo\niface lo inet loopback\n",
        "usr/share/zoneinfo/Europe/London": "TZif",
        "var/log/README": "logs\n",
        "boot/vmlinuz-6.12": "archive kernel",
    }.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    (tree / "etc/shadow").chmod(0o640)
    (tree / "boot/vmlinuz").symlink_to("vmlinuz-6.12")
    archive = tmp_path / "dom0-rootfs.tar.zst"
    subprocess.run(
        ["tar", "--zstd", "--numeric-owner", "-cf", str(archive), "-C", str(tree), "."], check=True
    )
    return archive


def debugfs_cat(device: Path, path: str) -> str:
    return _out("debugfs", "-R", f"cat {path}", str(device))


def test_fresh_bios_install_on_a_loop_device(
    tmp_path: Path, loop_devices: None, attach: Callable[..., str]
) -> None:
    image = tmp_path / "disk.img"
    with image.open("wb") as out:
        out.truncate(60 * GiB)
    loop = attach(image, read_only=False)
    stage = tmp_path / "stage"
    stage.mkdir()
    boot_files = {}
    for key in payload.BOOT_FILES:
        boot_files[key] = stage / Path(key).name
        boot_files[key].write_text(f"payload {key}\n")
    answer = answer_for(
        primary_disk=PrimaryDisk(Disk(loop)),
        hostname="xen-loop",
        timezone="Europe/London",
        root_password=RootPassword(PasswordType.PLAINTEXT, "loop-secret"),
    )
    args = BootArgs(server="http://10.0.2.2:8080", token="t0k", bootif="52:54:00:12:34:56")
    eth0 = Nic("eth0", "52:54:00:12:34:56")
    plan = make_plan(
        tmp_path,
        answer,
        args=args,
        disk=planning.DiskFound(Path(loop), facts.read_facts(loop, sr_has_vms=False)),
        network=planning.NetworkFound(fetched_by=eth0, nics=(eth0,)),
    )
    files = {**boot_files, "dom0-rootfs.tar.zst": fake_rootfs(tmp_path)}
    paths = plan.paths
    paths.log_file.parent.mkdir(parents=True)
    paths.log_file.write_text("install log line\n")
    try:
        disk.partition(plan.disk)
        made = disk.make_filesystems(plan.disk)
        disk.mount_target(paths.target, plan.disk)
        payload.extract_root(files, paths.target)
        payload.install_boot_files(files, paths.target)
        payload.install_packs((), paths.target)  # no repository, no driver source: nothing
        configure.configure_system(plan, "9.9.9", made)
        if (bootloader.GRUB_LIB / "i386-pc").is_dir():
            bootloader.install_bootloader(plan.bootloader, paths.target, made.uuids[Use.ROOT])
        else:
            print("grub-install skipped: /usr/lib/grub/i386-pc is missing (grub-pc-bin)")
            bootloader.write_grub_config(paths.target, made.uuids[Use.ROOT], run)
        assert mounts.mounts_under(paths.target) == [paths.target / "var/log", paths.target]
    finally:
        disk.unmount_target(paths.target, plan.staging)
    assert mounts.mounts_under(paths.target) == []
    disk.unmount_target(paths.target, plan.staging)  # idempotent
    disk.write_install_log(paths.log_file, plan.disk, paths.work)

    table = json.loads(_out("sfdisk", "-J", loop))["partitiontable"]
    assert table["label"] == "gpt"
    assert len(table["partitions"]) == 6
    parts = plan.disk.partitions
    assert parts[Use.ROOT] == Path(f"{loop}p1")
    for use, uuid in made.uuids.items():
        assert (
            _out("blkid", "-c", "/dev/null", "-s", "UUID", "-o", "value", str(parts[use])).strip()
            == uuid
        )

    root = parts[Use.ROOT]
    fstab = debugfs_cat(root, "/etc/fstab")
    assert f"UUID={made.uuids[Use.ROOT]}\t/\text4" in fstab
    assert f"UUID={made.uuids[Use.LOGS]}\t/var/log\text4" in fstab
    assert f"UUID={made.uuids[Use.SWAP]}\tnone\tswap" in fstab
    shadow = debugfs_cat(root, "/etc/shadow")
    assert shadow.startswith("root:$6$")
    assert "loop-secret" not in shadow
    assert shadow.splitlines()[1] == SHADOW.splitlines()[1]
    assert debugfs_cat(root, "/etc/hostname") == "xen-loop\n"
    assert debugfs_cat(root, "/boot/vmlinuz") == "payload boot/vmlinuz\n"
    grub_cfg = debugfs_cat(root, "/boot/grub/grub.cfg")
    assert f"search --no-floppy --fs-uuid --set=root {made.uuids[Use.ROOT]}" in grub_cfg
    assert debugfs_cat(root, "/boot/grub/grubenv").startswith("# GRUB Environment Block")
    assert "bridge_ports eth0" in debugfs_cat(root, "/etc/network/interfaces.d/xenbr0")

    firstboot = tmp_path / "firstboot.json"
    firstboot.write_text(debugfs_cat(root, "/etc/netinstall/firstboot.json"))
    sys.path.insert(0, str(DOM0))
    try:
        from netinstall_dom0.config import parse_firstboot
    finally:
        sys.path.remove(str(DOM0))
    config = parse_firstboot(firstboot, json.loads(firstboot.read_text()))
    assert config.sr is not None
    assert config.sr.devices == (f"/dev/disk/by-partuuid/{made.sr_partuuid}",)
    assert config.mac == "52:54:00:12:34:56"
    assert config.payload_version == "9.9.9"

    logs = parts[Use.LOGS]
    assert debugfs_cat(logs, "/README") == "logs\n"  # the archive's var/log went to logs
    assert debugfs_cat(logs, "/netinstall/install.log") == "install log line\n"
