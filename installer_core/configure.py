"""Configure the installed dom0 (SPEC §7): small file writers, each given the target root.

Host name, the management network for ifupdown (``xenbr0``), DNS, NTP (chrony),
time zone, keyboard, the root password, fstab by UUID and the first-boot data
that netinstall-firstboot reads (``/etc/netinstall/firstboot.json``, the schema
of ``netinstall_dom0/config.py``). Nothing here starts a process.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from answerfile.model import (
    AdminInterface,
    AnswerFile,
    NetworkBackend,
    PasswordType,
    Proto,
    ProtoV6,
)
from common.errors import InputError, NetinstallError
from installer_core import multipath
from installer_core.disk import Filesystems
from installer_core.plan import DiskPlan, InstallPlan
from partitioning.model import Use

log = logging.getLogger(__name__)

SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BRIDGE = "xenbr0"
BY_ID = Path("/dev/disk/by-id")
# Open vSwitch's one enabled unit; it pulls in ovsdb-server and ovs-vswitchd, which
# order themselves before networking.service.
OVS_UNIT = "/lib/systemd/system/openvswitch-switch.service"
# The symlink systemctl enable makes, and deb-systemd-helper's record of it (an empty
# file), so that a package upgrade keeps the choice.
OVS_LINK = "etc/systemd/system/multi-user.target.wants/openvswitch-switch.service"
OVS_RECORD = (
    "var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/openvswitch-switch.service"
)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def write_hostname(root: Path, hostname: str) -> None:
    """/etc/hostname, and the 127.0.1.1 line of /etc/hosts (other lines kept)."""
    _write(root / "etc/hostname", hostname + "\n")
    hosts = root / "etc/hosts"
    lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
    entry = f"127.0.1.1\t{hostname}"
    kept = [line for line in lines if not line.split("#", 1)[0].strip().startswith("127.0.1.1")]
    at = next((i + 1 for i, line in enumerate(kept) if line.startswith("127.0.0.1")), 0)
    _write(hosts, "\n".join([*kept[:at], entry, *kept[at:]]) + "\n")


def ensure_interfaces_d(root: Path) -> None:
    """/etc/network/interfaces with loopback, reading interfaces.d/ (Debian's default)."""
    path = root / "etc/network/interfaces"
    text = path.read_text() if path.exists() else "auto lo\niface lo inet loopback\n"
    if not any(
        line.split()[:1] in (["source"], ["source-directory"]) and "interfaces.d" in line
        for line in text.splitlines()
    ):
        text = text.rstrip("\n") + "\n\nsource /etc/network/interfaces.d/*\n"
    _write(path, text)


_V4 = {Proto.DHCP: "dhcp", Proto.STATIC: "static", Proto.NONE: "manual"}
_V6 = {ProtoV6.DHCP: "dhcp", ProtoV6.AUTOCONF: "auto", ProtoV6.STATIC: "static"}


def interfaces_text(admin: AdminInterface, nic: str, backend: NetworkBackend) -> str:
    """ifupdown stanzas: ``nic`` (or its VLAN) as the only port of the bridge xenbr0."""
    port = f"{nic}.{admin.vlan}" if admin.vlan else nic
    v4 = [f"iface {BRIDGE} inet {_V4[admin.proto]}"]
    if admin.proto is Proto.STATIC:
        v4 += [f"    address {admin.ipaddr}", f"    netmask {admin.subnet}"]
        v4 += [f"    gateway {admin.gateway}"] if admin.gateway else []
    lines = ["# Written by netinstall: the management interface (answer file admin-interface)."]
    if backend is NetworkBackend.BRIDGE:
        lines += [f"auto {BRIDGE}", f"iface {nic} inet manual", ""]
        lines += [f"iface {port} inet manual", ""] if admin.vlan else []
        lines += [*v4, f"    bridge_ports {port}", "    bridge_stp off", "    bridge_fd 0"]
    else:
        lines += [f"auto {BRIDGE}", f"allow-ovs {BRIDGE}", *v4, "    ovs_type OVSBridge"]
        lines += [f"    ovs_ports {nic}"]
        lines += [f"    ovs_extra set port {BRIDGE} tag={admin.vlan}"] if admin.vlan else []
        lines += ["", f"allow-{BRIDGE} {nic}", f"iface {nic} inet manual"]
        lines += [f"    ovs_bridge {BRIDGE}", "    ovs_type OVSPort"]
    if admin.protov6 is not None and admin.protov6 is not ProtoV6.NONE:
        lines += ["", f"iface {BRIDGE} inet6 {_V6[admin.protov6]}"]
        if admin.protov6 is ProtoV6.STATIC:
            lines += [f"    address {admin.ipv6}"]
            lines += [f"    gateway {admin.gatewayv6}"] if admin.gatewayv6 else []
    return "\n".join(lines) + "\n"


def write_network(root: Path, answer: AnswerFile, nic: str) -> None:
    ensure_interfaces_d(root)
    admin = answer.admin_interface or AdminInterface(proto=Proto.DHCP)
    _write(
        root / f"etc/network/interfaces.d/{BRIDGE}",
        interfaces_text(admin, nic, answer.network_backend),
    )


def uses_openvswitch(root: Path) -> bool:
    """Whether the ifupdown configuration under ``root`` has an Open vSwitch stanza."""
    network = root / "etc/network"
    files = [network / "interfaces", *sorted((network / "interfaces.d").glob("*"))]
    return any(
        line.split()[:1] == ["ovs_type"]
        for path in files
        if path.is_file()
        for line in path.read_text(errors="replace").splitlines()
    )


def enable_openvswitch(root: Path) -> None:
    """Open vSwitch starts at boot only when the network configuration uses it.

    Its daemons run before networking.service, so a host on the Linux bridge
    would wait for a switch it never uses (more than a minute of a slow boot).
    """
    wanted = uses_openvswitch(root)
    link, record = root / OVS_LINK, root / OVS_RECORD
    if wanted:
        link.parent.mkdir(parents=True, exist_ok=True)
        record.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(OVS_UNIT)
        record.touch()
    else:
        link.unlink(missing_ok=True)
        record.unlink(missing_ok=True)
    log.info("Open vSwitch %s at boot", "starts" if wanted else "does not start")


def write_dns(root: Path, name_servers: tuple[str, ...], proto: Proto) -> None:
    """Static: /etc/resolv.conf. DHCP: dhclient writes it, told to use ours if we have any."""
    if not name_servers:
        return
    if proto is Proto.DHCP:
        conf = root / "etc/dhcp/dhclient.conf"
        text = conf.read_text() if conf.exists() else ""
        line = f"supersede domain-name-servers {', '.join(name_servers)};"
        _write(conf, text + ("" if text.endswith("\n") or not text else "\n") + line + "\n")
        return
    _write(root / "etc/resolv.conf", "".join(f"nameserver {s}\n" for s in name_servers))


def write_ntp(root: Path, servers: tuple[str, ...]) -> None:
    """chrony sources; the answer file's servers replace Debian's default pool."""
    if not servers:
        return
    _write(
        root / "etc/chrony/sources.d/netinstall.sources",
        "".join(f"server {s} iburst\n" for s in servers),
    )
    conf = root / "etc/chrony/chrony.conf"
    if conf.exists():
        lines = conf.read_text().splitlines()
        out = [f"#{line}" if line.startswith("pool ") else line for line in lines]
        _write(conf, "\n".join(out) + "\n")


def set_timezone(root: Path, timezone: str) -> None:
    zone = root / "usr/share/zoneinfo" / timezone
    if not zone.is_file():
        log.warning("the installed system has no %s; setting it anyway", zone)
    localtime = root / "etc/localtime"
    localtime.unlink(missing_ok=True)
    localtime.symlink_to(f"/usr/share/zoneinfo/{timezone}")
    _write(root / "etc/timezone", timezone + "\n")


_XKB = {"uk": ("gb", ""), "dvorak": ("us", "dvorak"), "jp106": ("jp", ""), "sg": ("ch", "de")}


def keyboard_text(keymap: str) -> str:
    """/etc/default/keyboard for a console keymap name (``us``, ``uk``, ``de-latin1``)."""
    layout, variant = _XKB.get(keymap, (keymap.split("-", 1)[0], ""))
    return (
        'XKBMODEL="pc105"\n'
        f'XKBLAYOUT="{layout}"\n'
        f'XKBVARIANT="{variant}"\n'
        'XKBOPTIONS=""\n'
        'BACKSPACE="guess"\n'
    )


_KEYBOARD_KEYS = ("XKBMODEL", "XKBLAYOUT", "XKBVARIANT", "XKBOPTIONS", "BACKSPACE")


def keyboard_settings(text: str) -> dict[str, str]:
    """The settings of an /etc/default/keyboard text (comments and quotes dropped)."""
    found = {}
    for raw in text.splitlines():
        key, sep, value = raw.split("#", 1)[0].strip().partition("=")
        if sep and key in _KEYBOARD_KEYS:
            found[key] = value.strip().strip('"')
    return found


def write_keyboard(root: Path, keymap: str) -> None:
    """/etc/default/keyboard, left alone when it already holds these settings.

    console-setup.service compiles the console keymap again (ckbcomp, seconds of Perl;
    most of a minute of an emulated first boot) whenever this file is newer than its
    cache, which the image ships built for its own file: rewriting the same settings
    would only make the first boot slower.
    """
    path, text = root / "etc/default/keyboard", keyboard_text(keymap)
    same = path.is_file() and not path.is_symlink()
    if same and keyboard_settings(path.read_text(errors="replace")) == keyboard_settings(text):
        log.info("keyboard %s: as in the image, its console cache kept", keymap)
        return
    _write(path, text)


def hash_password(plaintext: str) -> str:
    """SHA-512 crypt (``$6$``) with a 16-character salt from ``secrets``.

    Uses the standard library's ``crypt`` (libcrypt underneath), present in
    Debian's Python 3.11 though deprecated (removed in 3.13); its deprecation
    warning is silenced here only.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # noqa: PLC0415

    salt = "$6$" + "".join(secrets.choice(SALT_ALPHABET) for _ in range(16))
    hashed = crypt.crypt(plaintext, salt)
    if not hashed or not hashed.startswith(salt + "$"):
        raise NetinstallError("this system's crypt() cannot make SHA-512 hashes")
    return hashed


def password_hash(answer: AnswerFile) -> str | None:
    """The answer file's root password as a crypt hash; None when it gives none."""
    password = answer.root_password
    if password is None:
        return None
    plain = password.type is PasswordType.PLAINTEXT
    return hash_password(password.value) if plain else password.value


def set_root_password(root: Path, hashed: str | None) -> None:
    """Replace the password field of root's /etc/shadow line; None locks it (``*``)."""
    value = hashed if hashed is not None else "*"
    if any(c in value for c in ":\n"):
        raise InputError("root-password: a hash may not hold ':' or a line break")
    shadow = root / "etc/shadow"
    lines = shadow.read_text().splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) > 1:
            fields[1] = value
            lines[i] = ":".join(fields)
            break
    else:
        raise NetinstallError(f"{shadow} has no root line")
    _write(shadow, "\n".join(lines) + "\n", mode=0o640)
    if hashed is None:
        log.info("no root-password: root stays locked until a password is set")


# systemd gives a device in fstab 90 s to show up, then drops into emergency mode. A
# SAN LUN's paths, a slow controller or an emulated machine under load can take longer
# (the root is the initramfs's business: it waits for it by itself).
DEVICE_TIMEOUT = "x-systemd.device-timeout=5min"


def fstab_text(uuids: Mapping[Use, str]) -> str:
    late = f",{DEVICE_TIMEOUT}"
    rows = [(Use.ROOT, "/", "ext4", "errors=remount-ro", "0 1")]
    rows += [(Use.LOGS, "/var/log", "ext4", "defaults" + late, "0 2")] if Use.LOGS in uuids else []
    rows += [(Use.ESP, "/boot/efi", "vfat", "umask=0077" + late, "0 1")] if Use.ESP in uuids else []
    rows += [(Use.SWAP, "none", "swap", "sw" + late, "0 0")] if Use.SWAP in uuids else []
    lines = [
        f"UUID={uuids[use]}\t{where}\t{fs}\t{opts}\t{passes}"
        for use, where, fs, opts, passes in rows
    ]
    return "# Written by netinstall: filesystems by UUID.\n" + "\n".join(lines) + "\n"


def stable_device(device: str, by_id: Path = BY_ID) -> str:
    """A /dev/disk/by-id name for ``device`` when one exists, else ``device`` itself."""
    if device.startswith(str(by_id)) or not by_id.is_dir():
        return device
    real = os.path.realpath(device)
    names = sorted(p.name for p in by_id.iterdir() if os.path.realpath(p) == real)
    preferred = [n for n in names if n.startswith("wwn-")] or names
    return str(by_id / preferred[0]) if preferred else device


def sr_config(
    disk: DiskPlan, made: Filesystems, answer: AnswerFile, by_id: Path = BY_ID
) -> dict[str, Any] | None:
    """The SR's type and devices: partition 3 (by PARTUUID) and the guest disks; None: no SR."""
    devices = []
    sr_part = disk.table.by_use(Use.SR)
    if disk.multipath is not None and sr_part is not None:
        devices.append(disk.multipath.partition_uuid_link(sr_part.number))  # any path
    elif Use.SR in disk.partitions:
        partuuid = made.sr_partuuid
        devices.append(
            f"/dev/disk/by-partuuid/{partuuid}" if partuuid else str(disk.partitions[Use.SR])
        )
    for guest in answer.guest_disks:
        if guest.path is None:
            raise InputError(f"guest-disk {guest.spec!r}: iSCSI guest disks are not supported yet")
        devices.append(stable_device(guest.path, by_id))
    if not devices:
        return None
    return {"type": answer.sr_type.value, "devices": list(dict.fromkeys(devices))}


def admin_description(admin: AdminInterface | None, nic: str) -> dict[str, Any]:
    """The management interface for first boot: the answer's settings, name and bridge."""
    settings = {k: getattr(v, "value", v) for k, v in vars(admin).items()} if admin else {}
    settings = {k: v for k, v in settings.items() if v is not None}
    return {"proto": "dhcp", **settings, "name": nic, "bridge": BRIDGE}


def firstboot_data(
    plan: InstallPlan, version: str, made: Filesystems, nic: str, mac: str | None
) -> dict[str, Any]:
    """What netinstall_dom0.config.parse_firstboot reads, and nothing else.

    ``server`` and ``token`` are null when the installer had no netinstall.server=.
    """
    return {
        "server": plan.args.server,
        "mac": mac,
        "token": plan.install_key,  # the enrolled key, never the install token
        "payload_version": version,
        "sr": sr_config(plan.disk, made, plan.answer),
        "admin_interface": admin_description(plan.answer.admin_interface, nic),
        "hostname": plan.answer.hostname,
    }


UPDATE_KEY = "etc/netinstall/update-key.pub"  # what the dom0 agent verifies bundles with


def write_update_key(root: Path, key: str | None) -> None:
    """The server's update key into dom0 (README "Updates"), when the enrolment gave one;
    without it the agent takes the key its first check-in's reply hands it."""
    if key:
        _write(root / UPDATE_KEY, f"{key}\n", mode=0o644)


def write_firstboot(root: Path, data: dict[str, Any]) -> None:
    path = root / "etc/netinstall/firstboot.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, sort_keys=True)
        out.write("\n")


def management_nic(plan: InstallPlan) -> str:
    """The management NIC's name the plan settled on."""
    if plan.network.admin_name is None:
        raise NetinstallError("the plan names no management interface")
    return plan.network.admin_name


def host_mac(plan: InstallPlan) -> str | None:
    """The MAC first boot reports as; None (with a warning) when there is no server."""
    mac = plan.network.host_mac
    if not plan.args.server:
        log.warning("no netinstall.server=: first boot makes the SR but reports to nobody")
    elif mac is None:
        raise NetinstallError("the MAC address of the management NIC is unknown")
    return mac.lower() if mac else None


def configure_system(plan: InstallPlan, version: str, made: Filesystems) -> None:
    """Step: the installed dom0's settings and its first-boot data, on the mounted target."""
    answer, root = plan.answer, plan.paths.target
    if answer.hostname:
        write_hostname(root, answer.hostname)
    nic = management_nic(plan)
    multipath.write_dom0_config(plan.disk.multipath, root)
    write_network(root, answer, nic)
    enable_openvswitch(root)
    proto = answer.admin_interface.proto if answer.admin_interface else Proto.DHCP
    write_dns(root, answer.name_servers, proto)
    write_ntp(root, answer.ntp_servers)
    if answer.timezone:
        set_timezone(root, answer.timezone)
    write_keyboard(root, answer.keymap)
    set_root_password(root, password_hash(answer))
    _write(root / "etc/fstab", fstab_text(made.uuids))
    _write(root / "etc/machine-id", "", mode=0o444)  # systemd makes one on first boot
    write_firstboot(root, firstboot_data(plan, version, made, nic, host_mac(plan)))
    write_update_key(root, plan.update_key)
    log.info("configured %s (management NIC %s on %s)", root, nic, BRIDGE)
