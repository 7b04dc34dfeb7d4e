"""Upgrades (SPEC §7): the steps of the mode, finding the installation, the backup,
root re-created with its UUID, the settings carried over and first boot re-armed.

No process starts: a fake runner records commands, a "mount" leaves the mount
point as the test filled it, and ``cp`` is a Python copy.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from answerfile.bootargs import parse_cmdline
from answerfile.model import (
    AdminInterface,
    AnswerFile,
    Disk,
    Mode,
    PasswordType,
    Proto,
    RootPassword,
    Source,
    SourceType,
)
from common.errors import InputError, NetinstallError
from common.firmware import Firmware
from installer_core import backup, carry, configure, existing, install, planning
from installer_core.disk import partition_map
from installer_core.network import Nic
from installer_core.plan import Existing, InstallPlan
from partitioning import planner
from partitioning.detect import detect_installation
from partitioning.model import DiskFacts, ExistingPartition, GiB, Label, Options, Use
from tests.unit.test_installer_fakes import INSTALL_KEY, TOKEN, FakeRunner, make_plan

CMDLINE = f"install netinstall.server=http://10.0.2.2:8080 netinstall.token={TOKEN} " + (
    "BOOTIF=01-52-54-00-12-34-56"
)
ROOT_UUID = "0b7e6c5a-1111-4222-8333-944455556666"
SR_UUID = "5d0c3f7e-aaaa-4bbb-8ccc-0123456789ab"
OLD_HASH = "$6$oldsalt$oldhash"
OLD_FIRSTBOOT = {
    "server": "http://old-server:8080",
    "mac": "52:54:00:12:34:56",
    "payload_version": "0.1.0",
    "sr": {"type": "lvm", "devices": ["/dev/disk/by-partuuid/1234"]},
    "admin_interface": {"proto": "static", "name": "eth0", "bridge": "xenbr0"},
    "hostname": "xen-old",
}
WRITES = ("mkfs.ext4", "mkfs.vfat", "mkswap", "cp", "sgdisk", "parted", "dd")


# --- fakes ------------------------------------------------------------------------


def table(firmware: Firmware = Firmware.BIOS, size: int = 60 * GiB, **change: Any) -> DiskFacts:
    """A disk as a fresh install of ours left it: the new GPT layout."""
    plan = planner.plan(DiskFacts(size=size), Options(firmware=firmware))
    parts = tuple(
        ExistingPartition(p.number, p.start, p.size, gpt_type=p.gpt_type, name=p.name)
        for p in plan.partitions
    )
    return DiskFacts(
        size=size,
        label=Label.GPT,
        partitions=parts,
        installation=detect_installation(Label.GPT, parts),
        **change,
    )


def old_gpt_table(size: int = 60 * GiB) -> DiskFacts:
    """XenServer 6.x: 1 root 4 GiB, 2 backup 4 GiB, 3 SR."""
    basic, lvm = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "E6D6D379-F507-44C2-A23C-238F2A3DF928"
    parts = (
        ExistingPartition(1, 1 << 20, 4 * GiB, gpt_type=basic),
        ExistingPartition(2, (1 << 20) + 4 * GiB, 4 * GiB, gpt_type=basic),
        ExistingPartition(3, (1 << 20) + 8 * GiB, 40 * GiB, gpt_type=lvm),
    )
    return DiskFacts(size, 512, Label.GPT, parts, detect_installation(Label.GPT, parts))


def blkid(uuid: str | int = ROOT_UUID, label: str = "root") -> Any:
    """The fake blkid: ``uuid`` for -s UUID (an int: its exit status), ``label`` for LABEL."""

    def answer(argv: Sequence[str]) -> str:
        if isinstance(uuid, int):
            from common.errors import CommandError

            raise CommandError(list(argv), uuid, "", "")
        return f"{uuid if argv[argv.index('-s') + 1] == 'UUID' else label}\n"

    return answer


def cp(argv: Sequence[str]) -> str:
    """``cp --archive SRC/. DST/`` done in Python (symlinks kept)."""
    source, destination = argv[-2].removesuffix("/."), argv[-1]
    shutil.copytree(source, destination, symlinks=True, dirs_exist_ok=True)
    return ""


def runner(**more: Any) -> FakeRunner:
    return FakeRunner({"blkid": blkid(), "cp": cp, **more})


def probe(fake: FakeRunner, facts: DiskFacts | None = None) -> existing.Probe:
    found = facts or table()
    return existing.Probe(
        runner=fake,
        read_facts=lambda disk, vms: found,
        device=lambda disk, element: Path("/dev/sda"),
    )


def write(root: Path, rel: str, text: str, mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def old_system(
    root: Path,
    version: str = "0.1.0",
    firstboot: dict[str, Any] | None = OLD_FIRSTBOOT,
    state: dict[str, Any] | None = None,
) -> Path:
    """A netinstall dom0 root as the upgrade finds it."""
    write(root, existing.RELEASE, f'NAME=netinstall\nVERSION="{version}"\nBUILD=b1\n')
    write(root, "etc/hostname", "xen-old\n")
    write(root, "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\txen-old\n")
    write(root, "etc/network/interfaces", "auto lo\nsource /etc/network/interfaces.d/*\n")
    write(root, "etc/network/interfaces.d/xenbr0", "iface xenbr0 inet static\n")
    write(root, "etc/resolv.conf", "nameserver 192.0.2.53\n")
    write(root, "etc/chrony/sources.d/netinstall.sources", "server ntp.old iburst\n")
    write(root, "etc/timezone", "Asia/Tokyo\n")
    (root / "etc/localtime").symlink_to("/usr/share/zoneinfo/Asia/Tokyo")
    write(root, "etc/default/keyboard", 'XKBLAYOUT="jp"\n')
    write(root, "etc/ssh/ssh_host_ed25519_key", "OLD PRIVATE KEY\n", 0o600)
    write(root, "etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 OLD\n")
    write(root, "etc/ssh/sshd_config", "# the old version's\n")
    write(root, "etc/shadow", f"root:{OLD_HASH}:19000:0:99999:7:::\nold:*:1::::::\n", 0o640)
    write(root, "etc/fstab", f"UUID={ROOT_UUID}\t/\text4\terrors=remount-ro\t0 1\n")
    if firstboot is not None:
        write(root, existing.FIRSTBOOT, json.dumps(firstboot), 0o600)
    write(root, "etc/netinstall/agent.json", '{"credential": "old-credential"}', 0o600)
    write(root, existing.STATE, json.dumps(state or {"sr_uuid": SR_UUID, "done": True}))
    write(root, "var/lib/netinstall/firstboot.done", "done\n")
    write(root, "boot/netinstall-installer/vmlinuz", "the agent's installer\n")
    write(root, "boot/grub/netinstall-installer.cfg", "menuentry installer {}\n")
    return root


def new_payload(root: Path) -> Path:
    """What extract-root left on the new root."""
    write(root, existing.RELEASE, "NAME=netinstall\nVERSION=0.2.0\n")
    write(root, "etc/hostname", "localhost\n")
    write(root, "etc/shadow", "root:*:19500:0:99999:7:::\nnew:*:1::::::\n", 0o640)
    write(root, "etc/network/interfaces.d/payload-default", "# the payload's\n")
    write(root, "etc/ssh/sshd_config", "# the new version's\n")
    link = root / configure.OVS_LINK  # enabled, as in the image
    link.parent.mkdir(parents=True)
    link.symlink_to("/lib/systemd/system/openvswitch-switch.service")
    return root


def upgrade_answer(**fields: Any) -> AnswerFile:
    return AnswerFile(
        **{
            "mode": Mode.UPGRADE,
            "existing_installation": Disk("sda"),
            "sources": (Source(SourceType.URL, "http://repo/"),),
            **fields,
        }
    )


def found_plan(
    tmp_path: Path,
    answer: AnswerFile | None = None,
    *,
    cmdline: str = CMDLINE,
    firmware: Firmware = Firmware.BIOS,
) -> InstallPlan:
    """An upgrade planned after its installation was found (BIOS, the new GPT layout on
    /dev/sda), the answer file fetched through the BOOTIF NIC."""
    answer = answer or upgrade_answer()
    work = tmp_path / "work"
    old_system(work / "old-root")
    found = existing.find_installation(
        answer.existing_installation, firmware, work, probe(runner())
    )
    disk = planning.DiskFound(found.device, found.facts, None, found.table, found.existing)
    eth0 = Nic("eth0", "52:54:00:12:34:56")
    network = planning.NetworkFound(fetched_by=eth0, nics=(eth0, Nic("eth1", "52:54:00:12:34:57")))
    return make_plan(tmp_path, answer, args=cmdline, firmware=firmware, disk=disk, network=network)


def written(fake: FakeRunner) -> list[list[str]]:
    return [call for call in fake.calls if Path(call[0]).name in WRITES]


# --- the steps of the mode --------------------------------------------------------


def test_each_mode_has_its_steps_after_the_plan(tmp_path: Path) -> None:
    args = parse_cmdline("install")
    before = ["network", "fetch-answerfile", "validate-answerfile", "plan"]
    upgrade = [name for name, _ in install.steps_of(args, found_plan(tmp_path))]
    assert upgrade == [
        *before,
        "installation-start-scripts",
        "download",
        "layout",
        "backup-root",
        "save-settings",
        "make-root",
        "mount-target",
        "extract-root",
        "install-boot-files",
        "install-packs",
        "carry-settings",
        "bootloader",
        "filesystem-populated-scripts",
        "unmount",
        "write-install-log",
        "installation-complete-scripts",
    ]
    for steps in (install.FRESH, install.FRESH_STAGED_ON_DISK, install.UPGRADE, install.RESTORE):
        assert len(set(steps)) == len(steps)
        assert all(install.WEIGHTS[name] > 0 for name in steps)
    # Nothing is written before the payload has verified; settings saved before root goes.
    for first, then in (
        ("plan", "download"),
        ("download", "backup-root"),
        ("backup-root", "make-root"),
        ("save-settings", "make-root"),
        ("extract-root", "carry-settings"),
        ("carry-settings", "bootloader"),
    ):
        assert upgrade.index(first) < upgrade.index(then)


def test_an_upgrade_answer_file_is_checked_on_its_disk() -> None:
    answer = AnswerFile(mode=Mode.UPGRADE, existing_installation=Disk("sdb"))
    assert planning.disk_element(answer) == (Disk("sdb"), "the disk of the existing installation")
    with pytest.raises(InputError, match="no <existing-installation>"):
        planning.disk_element(AnswerFile(mode=Mode.UPGRADE))


def test_the_upgrades_plan_reads_its_repository(tmp_path: Path) -> None:
    plan = found_plan(
        tmp_path, upgrade_answer(sources=(Source(SourceType.URL, "http://repo.example/v2"),))
    )
    assert plan.mode is Mode.UPGRADE
    assert plan.fetch is not None
    assert plan.fetch.repository == "http://repo.example/v2/"
    assert plan.existing is not None
    assert plan.existing.version == "0.1.0"
    assert all(p.keep for p in plan.disk.table.partitions)
    assert plan.network.admin_name is None  # the installation keeps its own


# --- find-installation ------------------------------------------------------------


def _find(
    tmp_path: Path,
    fake: FakeRunner,
    facts: DiskFacts | None = None,
    firmware: Firmware = Firmware.BIOS,
) -> existing.Found:
    return existing.find_installation(Disk("sda"), firmware, tmp_path / "work", probe(fake, facts))


def test_find_installation_reads_version_uuid_and_first_boot(tmp_path: Path) -> None:
    old_system(tmp_path / "work/old-root")
    fake = runner()
    found = _find(tmp_path, fake)
    assert found.existing == Existing(
        version="0.1.0",
        build="b1",
        root_uuid=ROOT_UUID,
        root_label="root",
        firstboot=OLD_FIRSTBOOT,
        sr_uuid=SR_UUID,
    )
    assert found.device == Path("/dev/sda")
    parts = partition_map(found.table, found.device, kept=True)
    assert parts[Use.ROOT] == Path("/dev/sda1")
    assert parts[Use.BACKUP] == Path("/dev/sda2")
    assert parts[Use.SR] == Path("/dev/sda3")
    assert parts[Use.LOGS] == Path("/dev/sda5")
    assert all(p.keep for p in found.table.partitions)
    mount = ["mount", "-t", "ext4", "-o", "ro", "/dev/sda1", str(tmp_path / "work/old-root")]
    assert mount in fake.calls
    assert written(fake) == []


@pytest.mark.parametrize(
    ("facts", "firmware", "words"),
    [
        (DiskFacts(size=60 * GiB), Firmware.BIOS, "its partition table holds none of the"),
        (old_gpt_table(), Firmware.BIOS, "old-gpt layout on /dev/sda needs its partition table"),
        (table(Firmware.BIOS), Firmware.UEFI, "no EFI system partition"),
        (table(Firmware.UEFI), Firmware.BIOS, "no BIOS boot partition"),
    ],
)
def test_find_installation_refuses_layouts_it_cannot_keep(
    tmp_path: Path, facts: DiskFacts, firmware: Firmware, words: str
) -> None:
    old_system(tmp_path / "work/old-root")
    fake = runner()
    with pytest.raises(InputError, match=words) as caught:
        _find(tmp_path, fake, facts, firmware)
    assert "nothing was written" in str(caught.value)
    assert written(fake) == []


def test_a_disk_without_netinstall_release_is_refused(tmp_path: Path) -> None:
    old_system(tmp_path / "work/old-root")
    (tmp_path / "work/old-root" / existing.RELEASE).unlink()
    fake = runner()
    with pytest.raises(
        InputError,
        match=r"^no netinstall installation on /dev/sda: its root partition /dev/sda1 has no "
        r"VERSION in /etc/netinstall-release; nothing was written$",
    ):
        _find(tmp_path, fake)
    assert written(fake) == []


def test_a_root_partition_without_a_filesystem_is_refused(tmp_path: Path) -> None:
    fake = runner(blkid=blkid(uuid=2))
    with pytest.raises(InputError, match="/dev/sda1 holds no filesystem"):
        _find(tmp_path, fake)
    assert fake.names() == ["blkid"]


def test_a_root_that_cannot_be_mounted_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"/dev/sda1 cannot be mounted \(mount exited"):
        _find(tmp_path, runner(mount=32))


@pytest.mark.parametrize(
    ("firstboot", "state", "words"),
    [
        (None, None, "has no /etc/netinstall/firstboot.json"),
        (OLD_FIRSTBOOT, {"done": True}, "first boot finished without recording the SR uuid"),
        (OLD_FIRSTBOOT, {"sr_uuid": 7}, "sr_uuid that is not a string"),
    ],
)
def test_an_sr_that_cannot_be_kept_safely_is_refused(
    tmp_path: Path, firstboot: dict[str, Any] | None, state: dict[str, Any] | None, words: str
) -> None:
    old_system(tmp_path / "work/old-root", firstboot=firstboot, state=state)
    with pytest.raises(InputError, match=words):
        _find(tmp_path, runner())


def test_first_boot_that_never_ran_needs_no_sr_uuid(tmp_path: Path) -> None:
    old_system(tmp_path / "work/old-root", state={"done": False})
    assert _find(tmp_path, runner()).existing.sr_uuid is None


def test_release_files_are_read_like_os_release() -> None:
    text = "# comment\nNAME=\"netinstall\"\nVERSION='1.2'\n\nBUILD=20240101\nnonsense\n"
    assert existing.parse_release(text) == {
        "NAME": "netinstall",
        "VERSION": "1.2",
        "BUILD": "20240101",
    }


# --- layout ---------------------------------------------------------------------


def test_the_layout_step_keeps_the_table_and_the_sr(tmp_path: Path) -> None:
    plan = found_plan(tmp_path)
    fake = runner()
    existing.check_layout(plan.disk, plan.firmware, probe(fake))
    assert written(fake) == []


def test_the_layout_step_refuses_a_table_that_changed(tmp_path: Path) -> None:
    plan = found_plan(tmp_path)
    with pytest.raises(NetinstallError, match="changed during the install"):
        existing.check_layout(plan.disk, plan.firmware, probe(runner(), table(size=80 * GiB)))


def test_a_plan_that_moves_the_sr_is_refused() -> None:
    before = planner.plan(table(), Options(mode=planner.Mode.UPGRADE))
    moved = planner.plan(DiskFacts(size=60 * GiB), Options())
    with pytest.raises(NetinstallError, match="would change the local SR partition"):
        existing.assert_sr_kept(before, moved)
    existing.assert_sr_kept(before, before)


# --- backup-root and make-root ----------------------------------------------------


def test_backup_root_copies_root_and_marks_what_it_holds(tmp_path: Path) -> None:
    plan = found_plan(tmp_path)
    assert plan.existing is not None
    fake = runner()
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    work = tmp_path / "work"
    backup.backup_root(plan.disk, plan.existing, work, fake, now=lambda: when)
    copy = work / "backup"
    assert written(fake) == [
        ["mkfs.ext4", "-F", "-q", "-L", "backup", "/dev/sda2"],
        ["cp", "--archive", "--one-file-system", f"{work / 'old-root'}/.", f"{copy}/"],
    ]
    mounts = [call[-2:] for call in fake.calls if call[0] == "mount"]
    assert mounts[-2:] == [
        ["/dev/sda1", str(work / "old-root")],
        ["/dev/sda2", str(copy)],
    ]
    assert ["mount", "-t", "ext4", "-o", "ro", "/dev/sda1", str(work / "old-root")] in (fake.calls)
    assert json.loads((copy / existing.MARKER).read_text()) == {
        "version": "0.1.0",
        "build": "b1",
        "date": "2024-05-01T12:00:00+00:00",
        "source_partition": "/dev/sda1",
        "source_uuid": ROOT_UUID,
    }
    assert (copy / "etc/hostname").read_text() == "xen-old\n"
    assert not (copy / "boot/netinstall-installer").exists()  # the agent's installer
    assert not (copy / "boot/grub/netinstall-installer.cfg").exists()
    assert "sync" in fake.names()


def test_nothing_formats_the_sr_partition(tmp_path: Path) -> None:
    plan = found_plan(tmp_path)
    assert plan.existing is not None
    parts = dict(plan.disk.partitions)
    fake = runner()
    bad = replace(plan.disk, partitions={**parts, Use.BACKUP: parts[Use.SR]})
    with pytest.raises(NetinstallError, match="/dev/sda3: it is the local SR partition"):
        backup.backup_root(bad, plan.existing, tmp_path / "work", fake)
    bad = replace(plan.disk, partitions={**parts, Use.ROOT: parts[Use.SR]})
    with pytest.raises(NetinstallError, match="it is the local SR partition"):
        backup.make_root(bad, plan.existing, upgrade=True, runner=fake)
    assert written(fake) == []


def test_make_root_keeps_the_filesystem_uuid_and_label(tmp_path: Path) -> None:
    plan = found_plan(tmp_path)
    assert plan.existing is not None
    fake = runner()
    assert backup.make_root(plan.disk, plan.existing, upgrade=True, runner=fake) == ROOT_UUID
    assert written(fake) == [
        ["mkfs.ext4", "-F", "-q", "-L", "root", "-U", ROOT_UUID, "/dev/sda1"],
    ]


def test_make_root_checks_the_uuid_it_got(tmp_path: Path) -> None:
    plan = found_plan(tmp_path)
    assert plan.existing is not None
    with pytest.raises(NetinstallError, match="gave /dev/sda1 the UUID other, not"):
        backup.make_root(
            plan.disk, plan.existing, upgrade=True, runner=runner(blkid=blkid(uuid="other"))
        )


# --- save-settings and carry-settings ---------------------------------------------


def carried(
    tmp_path: Path, answer: AnswerFile | None = None, cmdline: str = CMDLINE
) -> InstallPlan:
    """An upgrade up to carry-settings: found, settings saved, payload 0.2.0 laid down."""
    plan = found_plan(tmp_path, answer, cmdline=cmdline)
    saved = carry.save_settings(plan.disk, tmp_path / "work", runner())
    shutil.rmtree(tmp_path / "work/old-root")  # root is re-created: only the saved copy is left
    new_payload(plan.paths.target)
    carry.carry_settings(plan, saved, "0.2.0")
    return plan


def firstboot_of(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / existing.FIRSTBOOT).read_text())
    return data


def test_the_settings_are_carried_over_the_new_payload(tmp_path: Path) -> None:
    root = carried(tmp_path).paths.target
    assert (root / "etc/hostname").read_text() == "xen-old\n"
    assert (root / "etc/hosts").read_text().endswith("127.0.1.1\txen-old\n")
    assert (root / "etc/network/interfaces.d/xenbr0").read_text() == "iface xenbr0 inet static\n"
    assert not (root / "etc/network/interfaces.d/payload-default").exists()
    assert (root / "etc/resolv.conf").read_text() == "nameserver 192.0.2.53\n"
    assert "ntp.old" in (root / "etc/chrony/sources.d/netinstall.sources").read_text()
    assert (root / "etc/timezone").read_text() == "Asia/Tokyo\n"
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Asia/Tokyo"
    assert (root / "etc/default/keyboard").read_text() == 'XKBLAYOUT="jp"\n'
    key = root / "etc/ssh/ssh_host_ed25519_key"
    assert key.read_text() == "OLD PRIVATE KEY\n"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (root / "etc/ssh/sshd_config").read_text() == "# the new version's\n"
    assert (root / "etc/fstab").read_text().startswith(f"UUID={ROOT_UUID}\t/\t")
    shadow = root / "etc/shadow"
    assert shadow.read_text() == f"root:{OLD_HASH}:19000:0:99999:7:::\nnew:*:1::::::\n"
    assert shadow.stat().st_mode & 0o777 == 0o640
    assert (root / existing.RELEASE).read_text().endswith("VERSION=0.2.0\n")
    # the carried interfaces have no Open vSwitch stanza: the switch stays off
    assert not (root / configure.OVS_LINK).is_symlink()


def test_first_boot_is_armed_again_for_the_new_version(tmp_path: Path) -> None:
    root = carried(tmp_path).paths.target
    assert firstboot_of(root) == {
        "server": "http://10.0.2.2:8080",
        "mac": "52:54:00:12:34:56",
        "token": INSTALL_KEY,  # the enrolled key, never the token
        "payload_version": "0.2.0",
        "sr": OLD_FIRSTBOOT["sr"],
        "admin_interface": OLD_FIRSTBOOT["admin_interface"],
        "hostname": "xen-old",
    }
    assert (root / existing.FIRSTBOOT).stat().st_mode & 0o777 == 0o600
    state = json.loads((root / existing.STATE).read_text())
    assert state == {"sr_uuid": SR_UUID, "done": False}
    assert not (root / carry.AGENT_CONFIG).exists()
    assert not (root / carry.FIRSTBOOT_DONE).exists()


def test_the_upgrades_answer_file_wins_over_the_carried_settings(tmp_path: Path) -> None:
    answer = upgrade_answer(
        hostname="xen-new",
        admin_interface=AdminInterface(Proto.DHCP, name="eth1"),
        name_servers=("198.51.100.1",),
        timezone="Europe/London",
        keymap="de",
        root_password=RootPassword(PasswordType.HASH, "$6$new$hash"),
    )
    root = carried(tmp_path, answer).paths.target
    assert (root / "etc/hostname").read_text() == "xen-new\n"
    assert "bridge_ports eth1" in (root / "etc/network/interfaces.d/xenbr0").read_text()
    assert "198.51.100.1" in (root / "etc/dhcp/dhclient.conf").read_text()  # DHCP now
    assert (root / "etc/timezone").read_text() == "Europe/London\n"
    assert 'XKBLAYOUT="de"' in (root / "etc/default/keyboard").read_text()
    assert (root / "etc/shadow").read_text().startswith("root:$6$new$hash:")
    data = firstboot_of(root)
    assert data["hostname"] == "xen-new"
    assert data["admin_interface"] == {"proto": "dhcp", "name": "eth1", "bridge": "xenbr0"}
    assert data["sr"] == OLD_FIRSTBOOT["sr"]


def test_without_a_server_first_boot_reports_to_nobody(tmp_path: Path) -> None:
    plan = carried(tmp_path, cmdline="install")
    data = firstboot_of(plan.paths.target)
    assert (data["server"], data["token"]) == (None, None)
    assert data["mac"] == "52:54:00:12:34:56"  # the NIC that fetched the answer file


def test_carrying_needs_the_saved_settings(tmp_path: Path) -> None:
    plan = found_plan(tmp_path)
    with pytest.raises(NetinstallError, match="were not saved"):
        carry.carry_settings(plan, tmp_path / "work/carried", "0.2.0")


def test_copies_keep_owners_modes_and_symlinks(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write(source, "d/secret", "s", 0o600)
    write(source, "d/sub/plain", "p", 0o644)
    (source / "d/link").symlink_to("secret")
    (source / "d").chmod(0o750)
    destination = tmp_path / "dest/d"
    write(destination, "stale", "gone")
    carry.copy_preserving(source / "d", destination)
    assert sorted(p.name for p in destination.iterdir()) == ["link", "secret", "sub"]
    assert (destination / "secret").stat().st_mode & 0o777 == 0o600
    assert destination.stat().st_mode & 0o777 == 0o750
    assert os.readlink(destination / "link") == "secret"
    assert (destination / "sub/plain").stat().st_uid == (source / "d/sub/plain").stat().st_uid
