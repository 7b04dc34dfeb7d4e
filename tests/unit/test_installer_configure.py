"""The installer's configure step: every file writer on a temporary target root."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from answerfile.bootargs import BootArgs
from answerfile.model import (
    AdminInterface,
    AnswerFile,
    Disk,
    NetworkBackend,
    PasswordType,
    PrimaryDisk,
    Proto,
    ProtoV6,
    RootPassword,
    SrType,
)
from common.errors import InputError
from installer_core import configure, planning
from installer_core.disk import Filesystems
from installer_core.network import Nic
from installer_core.plan import InstallPlan
from partitioning.model import Use
from tests.unit.test_installer_fakes import INSTALL_KEY, answer_for, make_plan

DOM0 = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "dom0"
SHADOW = "root:*:19500:0:99999:7:::\ndaemon:*:19500:0:99999:7:::\nnobody:!:19500::::::\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    target = tmp_path / "target"
    (target / "etc").mkdir(parents=True)
    (target / "etc/shadow").write_text(SHADOW)
    (target / "etc/hosts").write_text(
        "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tip6-localhost\n"
    )
    return target


def parse_firstboot(path: Path) -> Any:
    sys.path.insert(0, str(DOM0))
    try:
        from netinstall_dom0.config import parse_firstboot as parse
    finally:
        sys.path.remove(str(DOM0))
    return parse(path, json.loads(path.read_text()))


def test_hostname_and_hosts(root: Path) -> None:
    configure.write_hostname(root, "xen01")
    assert (root / "etc/hostname").read_text() == "xen01\n"
    assert (root / "etc/hosts").read_text() == (
        "127.0.0.1\tlocalhost\n127.0.1.1\txen01\n::1\tip6-localhost\n"
    )


def test_bridge_dhcp() -> None:
    text = configure.interfaces_text(AdminInterface(Proto.DHCP), "eth0", NetworkBackend.BRIDGE)
    assert text.splitlines()[1:] == [
        "auto xenbr0",
        "iface eth0 inet manual",
        "",
        "iface xenbr0 inet dhcp",
        "    bridge_ports eth0",
        "    bridge_stp off",
        "    bridge_fd 0",
    ]


def test_bridge_static_with_vlan_and_ipv6() -> None:
    admin = AdminInterface(
        Proto.STATIC,
        name="eth1",
        ipaddr="10.0.0.5",
        subnet="255.255.255.0",
        gateway="10.0.0.1",
        vlan=42,
        protov6=ProtoV6.STATIC,
        ipv6="2001:db8::5/64",
        gatewayv6="2001:db8::1",
    )
    lines = configure.interfaces_text(admin, "eth1", NetworkBackend.BRIDGE).splitlines()
    assert "iface eth1.42 inet manual" in lines
    at = lines.index("iface xenbr0 inet static")
    assert lines[at + 1 : at + 5] == [
        "    address 10.0.0.5",
        "    netmask 255.255.255.0",
        "    gateway 10.0.0.1",
        "    bridge_ports eth1.42",
    ]
    six = lines.index("iface xenbr0 inet6 static")
    assert lines[six + 1 :] == ["    address 2001:db8::5/64", "    gateway 2001:db8::1"]


def test_openvswitch_stanzas() -> None:
    admin = AdminInterface(Proto.DHCP, vlan=7, protov6=ProtoV6.AUTOCONF)
    lines = configure.interfaces_text(admin, "eth0", NetworkBackend.OPENVSWITCH).splitlines()
    assert lines[1:] == [
        "auto xenbr0",
        "allow-ovs xenbr0",
        "iface xenbr0 inet dhcp",
        "    ovs_type OVSBridge",
        "    ovs_ports eth0",
        "    ovs_extra set port xenbr0 tag=7",
        "",
        "allow-xenbr0 eth0",
        "iface eth0 inet manual",
        "    ovs_bridge xenbr0",
        "    ovs_type OVSPort",
        "",
        "iface xenbr0 inet6 auto",
    ]


def test_interfaces_file_sources_interfaces_d(root: Path) -> None:
    (root / "etc/network").mkdir()
    (root / "etc/network/interfaces").write_text("auto lo\niface lo inet loopback\n")
    configure.write_network(root, AnswerFile(), "eth0")
    assert (
        (root / "etc/network/interfaces")
        .read_text()
        .endswith("\nsource /etc/network/interfaces.d/*\n")
    )
    assert "bridge_ports eth0" in (root / "etc/network/interfaces.d/xenbr0").read_text()
    configure.ensure_interfaces_d(root)  # a second time adds nothing
    assert (root / "etc/network/interfaces").read_text().count("source") == 1


def _ovs_enabled(root: Path) -> tuple[bool, bool]:
    return (root / configure.OVS_LINK).is_symlink(), (root / configure.OVS_RECORD).is_file()


@pytest.mark.parametrize(
    ("backend", "enabled"),
    [(NetworkBackend.BRIDGE, (False, False)), (NetworkBackend.OPENVSWITCH, (True, True))],
)
def test_open_vswitch_starts_only_when_the_network_uses_it(
    root: Path, backend: NetworkBackend, enabled: tuple[bool, bool]
) -> None:
    link, record = root / configure.OVS_LINK, root / configure.OVS_RECORD
    link.parent.mkdir(parents=True)  # the image has it enabled, as the package leaves it
    link.symlink_to("/lib/systemd/system/openvswitch-switch.service")
    record.parent.mkdir(parents=True)
    record.touch()
    configure.write_network(root, AnswerFile(network_backend=backend), "eth0")
    configure.enable_openvswitch(root)
    assert _ovs_enabled(root) == enabled
    configure.enable_openvswitch(root)  # a second time changes nothing
    assert _ovs_enabled(root) == enabled


def test_open_vswitch_enabled_again_for_an_ovs_stanza(root: Path) -> None:
    configure.write_network(root, AnswerFile(network_backend=NetworkBackend.BRIDGE), "eth0")
    configure.enable_openvswitch(root)
    (root / "etc/network/interfaces").write_text(
        "auto br1\niface br1 inet manual\n  ovs_type OVSBridge\n"
    )
    configure.enable_openvswitch(root)
    link = root / configure.OVS_LINK
    assert str(link.readlink()) == "/lib/systemd/system/openvswitch-switch.service"
    assert _ovs_enabled(root) == (True, True)


def test_dns_static_and_dhcp(root: Path) -> None:
    configure.write_dns(root, ("10.0.0.53", "10.0.0.54"), Proto.STATIC)
    assert (root / "etc/resolv.conf").read_text() == "nameserver 10.0.0.53\nnameserver 10.0.0.54\n"
    configure.write_dns(root, ("10.0.0.53",), Proto.DHCP)
    assert (root / "etc/dhcp/dhclient.conf").read_text() == (
        "supersede domain-name-servers 10.0.0.53;\n"
    )


def test_chrony_sources_replace_the_pool(root: Path) -> None:
    (root / "etc/chrony").mkdir()
    (root / "etc/chrony/chrony.conf").write_text(
        "pool 2.debian.pool.ntp.org iburst\nmakestep 1 3\n"
    )
    configure.write_ntp(root, ("ntp1.example", "10.0.0.1"))
    assert (root / "etc/chrony/sources.d/netinstall.sources").read_text() == (
        "server ntp1.example iburst\nserver 10.0.0.1 iburst\n"
    )
    assert (root / "etc/chrony/chrony.conf").read_text() == (
        "#pool 2.debian.pool.ntp.org iburst\nmakestep 1 3\n"
    )


def test_timezone_and_keyboard(root: Path) -> None:
    configure.set_timezone(root, "Asia/Tokyo")
    assert (root / "etc/localtime").readlink() == Path("/usr/share/zoneinfo/Asia/Tokyo")
    assert (root / "etc/timezone").read_text() == "Asia/Tokyo\n"
    assert 'XKBLAYOUT="gb"' in configure.keyboard_text("uk")
    assert 'XKBLAYOUT="de"' in configure.keyboard_text("de-latin1")


# Debian's own /etc/default/keyboard for the us layout, as the dom0 image holds it.
IMAGE_KEYBOARD = """# KEYBOARD CONFIGURATION FILE

# Consult the keyboard(5) manual page.

XKBMODEL="pc105"
XKBLAYOUT="us"
XKBVARIANT=""
XKBOPTIONS=""

BACKSPACE="guess"
"""


def test_the_image_keyboard_is_kept_when_the_settings_are_the_same(root: Path) -> None:
    keyboard = root / "etc/default/keyboard"
    keyboard.parent.mkdir(parents=True, exist_ok=True)
    keyboard.write_text(IMAGE_KEYBOARD)
    os.utime(keyboard, (1_000_000, 1_000_000))  # older than the image's console cache
    configure.write_keyboard(root, "us")
    assert keyboard.read_text() == IMAGE_KEYBOARD
    assert keyboard.stat().st_mtime == 1_000_000  # console-setup's cache stays valid
    configure.write_keyboard(root, "de-latin1")
    assert 'XKBLAYOUT="de"' in keyboard.read_text()
    assert keyboard.stat().st_mtime > 1_000_000
    configure.write_keyboard(root, "us")  # back from de: written again
    assert configure.keyboard_settings(keyboard.read_text())["XKBLAYOUT"] == "us"


def test_keyboard_written_when_there_is_none(root: Path) -> None:
    configure.write_keyboard(root, "uk")
    assert configure.keyboard_settings((root / "etc/default/keyboard").read_text()) == {
        "XKBMODEL": "pc105",
        "XKBLAYOUT": "gb",
        "XKBVARIANT": "",
        "XKBOPTIONS": "",
        "BACKSPACE": "guess",
    }


def test_root_password_plaintext_is_hashed_and_never_written(root: Path) -> None:
    hashed = configure.hash_password("s3cret pass")
    configure.set_root_password(root, hashed)
    text = (root / "etc/shadow").read_text()
    assert "s3cret" not in text
    lines = text.splitlines()
    assert lines[0].split(":")[1].startswith("$6$")
    assert lines[0].split(":")[2:] == ["19500", "0", "99999", "7", "", "", ""]
    assert lines[1:] == SHADOW.splitlines()[1:]
    assert (root / "etc/shadow").stat().st_mode & 0o777 == 0o640
    assert configure.hash_password("x") != configure.hash_password("x")  # salted


def test_root_password_absent_locks_root(root: Path) -> None:
    (root / "etc/shadow").write_text(SHADOW.replace("root:*", "root:$6$old$hash"))
    configure.set_root_password(root, None)
    assert (root / "etc/shadow").read_text() == SHADOW


def test_root_password_hash_with_colon_refused(root: Path) -> None:
    with pytest.raises(InputError, match="may not hold"):
        configure.set_root_password(root, "$6$a:b")


def test_fstab_by_uuid() -> None:
    uuids = {Use.ROOT: "R", Use.BACKUP: "B", Use.LOGS: "L", Use.ESP: "E", Use.SWAP: "S"}
    assert configure.fstab_text(uuids).splitlines()[1:] == [
        "UUID=R\t/\text4\terrors=remount-ro\t0 1",
        "UUID=L\t/var/log\text4\tdefaults,x-systemd.device-timeout=5min\t0 2",
        "UUID=E\t/boot/efi\tvfat\tumask=0077,x-systemd.device-timeout=5min\t0 1",
        "UUID=S\tnone\tswap\tsw,x-systemd.device-timeout=5min\t0 0",
    ]
    assert len(configure.fstab_text({Use.ROOT: "R", Use.BACKUP: "B"}).splitlines()) == 2


MADE = Filesystems({Use.ROOT: "R", Use.LOGS: "L", Use.SWAP: "S", Use.BACKUP: "B"}, "1234-abcd")
ARGS = BootArgs(server="http://10.0.2.2:8080", token="tok-123", bootif="52:54:00:AA:BB:CC")


def _plan(tmp_path: Path, root: Path, answer: AnswerFile, args: BootArgs = ARGS) -> InstallPlan:
    """/dev/sda planned; the answer file fetched through eth0 (the BOOTIF NIC)."""
    eth0 = Nic("eth0", "52:54:00:aa:bb:cc")
    network = planning.NetworkFound(fetched_by=eth0, nics=(eth0,))
    return make_plan(tmp_path, answer, args=args, network=network, target=root)


def test_configure_system_writes_everything(tmp_path: Path, root: Path) -> None:
    answer = answer_for(
        guest_disks=(Disk("/dev/disk/by-id/wwn-0x5000"),),
        sr_type=SrType.EXT,
        hostname="xen01",
        timezone="Europe/London",
        keymap="us",
        name_servers=("10.0.0.53",),
        ntp_servers=("10.0.0.1",),
        root_password=RootPassword(PasswordType.PLAINTEXT, "hunter2"),
    )
    configure.configure_system(_plan(tmp_path, root, answer), "1.2.3", MADE)
    assert "hunter2" not in (root / "etc/shadow").read_text()
    assert (root / "etc/machine-id").read_text() == ""
    assert (root / "etc/fstab").read_text().count("UUID=") == 3
    firstboot = root / "etc/netinstall/firstboot.json"
    assert firstboot.stat().st_mode & 0o777 == 0o600
    config = parse_firstboot(firstboot)
    assert config.server == "http://10.0.2.2:8080"
    assert config.mac == "52:54:00:aa:bb:cc"
    assert config.token == INSTALL_KEY  # the key the installer enrolled, never the token
    assert config.payload_version == "1.2.3"
    assert config.sr.type.value == "ext"
    assert config.sr.devices == ("/dev/disk/by-partuuid/1234-abcd", "/dev/disk/by-id/wwn-0x5000")
    assert config.admin_interface == {"proto": "dhcp", "name": "eth0", "bridge": "xenbr0"}
    assert config.hostname == "xen01"
    data = json.loads(firstboot.read_text())
    assert set(data) == {
        "server",
        "mac",
        "token",
        "payload_version",
        "sr",
        "admin_interface",
        "hostname",
    }


def test_the_update_key_the_enrolment_gave_is_written_into_dom0(tmp_path: Path, root: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ netinstall-updates"
    plan = replace(_plan(tmp_path, root, answer_for()), update_key=key)
    configure.configure_system(plan, "1.2.3", MADE)
    written = root / "etc/netinstall/update-key.pub"
    assert written.read_text() == key + "\n"
    assert written.stat().st_mode & 0o777 == 0o644
    written.unlink()
    configure.configure_system(_plan(tmp_path, root, answer_for()), "1.2.3", MADE)
    assert not written.exists()  # none given: the agent takes it at its first check-in


def test_firstboot_without_sr(tmp_path: Path, root: Path) -> None:
    answer = answer_for(
        primary_disk=PrimaryDisk(Disk("sda"), guest_storage=False),
        admin_interface=AdminInterface(
            Proto.STATIC, name="eth0", ipaddr="10.0.0.5", subnet="255.255.255.0"
        ),
    )
    configure.configure_system(_plan(tmp_path, root, answer), "1.2.3", MADE)
    config = parse_firstboot(root / "etc/netinstall/firstboot.json")
    assert config.sr is None
    assert config.admin_interface["ipaddr"] == "10.0.0.5"
    assert config.hostname is None


def test_stable_device_prefers_a_by_id_name(tmp_path: Path) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    device = tmp_path / "sdb"
    device.write_text("")
    (by_id / "ata-QEMU_HARDDISK_QM2").symlink_to(device)
    (by_id / "wwn-0x5000c5").symlink_to(device)
    assert configure.stable_device(str(device), by_id) == str(by_id / "wwn-0x5000c5")
    assert configure.stable_device("/dev/sdz", by_id) == "/dev/sdz"


def test_firstboot_data_without_a_server(tmp_path: Path, root: Path) -> None:
    """Installed from an answer file of some other web server: the SR, no report."""
    answer = answer_for()
    plan = _plan(tmp_path, root, answer, BootArgs(bootif="52:54:00:AA:BB:CC"))
    configure.configure_system(plan, "1.2.3", MADE)
    config = parse_firstboot(root / "etc/netinstall/firstboot.json")
    assert (config.server, config.token) == (None, None)
    assert config.sr is not None
