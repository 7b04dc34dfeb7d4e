"""An upgrade keeps the host's settings; an upgrade or a restore re-arms first boot (SPEC §7, §8).

``save_settings`` copies the settings from the old root (mounted read-only) into
the installer's RAM before root is re-created; ``carry_settings`` puts them over
the new payload: network configuration, host name, name servers, NTP, time
zone, keyboard, ssh host keys, root's /etc/shadow entry, the fstab,
/etc/netinstall and /var/lib/netinstall. Whatever the upgrade's answer file
does give (a host name, an admin interface, a password...) wins over what was
carried. Nothing here touches the local SR.

Then first boot is armed again (``rearm_first_boot``): a new firstboot.json with
the version now on root and this run's server and token (the SR section and the
management interface stay), the first-boot state set to not done with the SR
uuid kept, so the next boot finds the existing SR, makes none, and reports
``running``; the old agent credential is removed (the server hands out a new one
in its answer to that report).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from answerfile.model import Proto
from common.errors import NetinstallError
from common.process import CommandRunner, run
from installer_core import configure
from installer_core.existing import STATE
from installer_core.mounts import mounted
from installer_core.plan import DiskPlan, Existing, InstallPlan
from partitioning.model import Use

log = logging.getLogger(__name__)

SAVED = "carried"  # under the work directory: the settings between save and carry
SHADOW = "etc/shadow"
SSH_HOST_KEYS = "etc/ssh/ssh_host_*"
CARRIED = (
    "etc/hostname",
    "etc/hosts",
    "etc/machine-id",
    "etc/network/interfaces",
    "etc/network/interfaces.d",
    "etc/resolv.conf",
    "etc/dhcp/dhclient.conf",  # the name servers when the management NIC uses DHCP
    "etc/chrony/chrony.conf",
    "etc/chrony/sources.d",
    "etc/chrony/conf.d",
    "etc/timezone",
    "etc/localtime",
    "etc/default/keyboard",
    "etc/fstab",
    "etc/netinstall",
    "var/lib/netinstall",
)
AGENT_CONFIG = "etc/netinstall/agent.json"
FIRSTBOOT_DONE = "var/lib/netinstall/firstboot.done"
DEFAULT_KEYMAP = "us"  # the model's default: an upgrade changes the keymap only to another


def settings_in(root: Path) -> list[str]:
    """The carried paths that exist under ``root`` (root's shadow included), relative."""
    found = [rel for rel in CARRIED if os.path.lexists(root / rel)]
    found += sorted(str(p.relative_to(root)) for p in root.glob(SSH_HOST_KEYS))
    return found + ([SHADOW] if (root / SHADOW).is_file() else [])


def _same_owner_and_mode(source: Path, destination: Path) -> None:
    info = source.lstat()
    os.chown(destination, info.st_uid, info.st_gid, follow_symlinks=False)
    if not destination.is_symlink():
        destination.chmod(info.st_mode & 0o7777)  # chown may clear set-id bits


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def copy_preserving(source: Path, destination: Path) -> None:
    """A file, symlink or directory tree, replacing ``destination``: contents, modes,
    owners by number, times and extended attributes (ACLs are among them)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    _remove(destination)
    if not source.is_dir() or source.is_symlink():
        shutil.copy2(source, destination, follow_symlinks=False)
        _same_owner_and_mode(source, destination)
        return
    shutil.copytree(source, destination, symlinks=True)
    for top, dirs, files in os.walk(destination):
        here = Path(top)
        for name in [*dirs, *files]:
            _same_owner_and_mode(source / (here / name).relative_to(destination), here / name)
    _same_owner_and_mode(source, destination)


def root_entry(shadow: Path) -> str | None:
    """Root's line of an /etc/shadow, None when there is none."""
    for line in shadow.read_text(encoding="utf-8").splitlines():
        if line.split(":", 1)[0] == "root":
            return line
    return None


def replace_root_entry(shadow: Path, entry: str) -> None:
    """Root's line of ``shadow`` replaced by ``entry``; the other lines, mode and owner kept."""
    lines = shadow.read_text(encoding="utf-8").splitlines()
    at = next((i for i, line in enumerate(lines) if line.split(":", 1)[0] == "root"), None)
    if at is None:
        raise NetinstallError(f"{shadow} has no root line")
    lines[at] = entry
    shadow.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _existing(plan: InstallPlan) -> Existing:
    if plan.existing is None:
        raise NetinstallError("the plan holds no installation found on the disk")
    return plan.existing


def save_settings(disk: DiskPlan, work: Path, runner: CommandRunner = run) -> Path:
    """Step (upgrade): copy the settings from the old root into the installer's RAM;
    the directory that holds them is returned."""
    root = disk.partitions.get(Use.ROOT)
    if root is None:
        raise NetinstallError("the installation has no root partition")
    saved = work / SAVED
    _remove(saved)
    saved.mkdir(parents=True)
    with mounted(runner, root, work / "old-root", fstype="ext4", options="ro") as old:
        names = settings_in(old)
        for rel in names:
            copy_preserving(old / rel, saved / rel)
    log.info("saved from the old root: %s", ", ".join(names) or "nothing")
    return saved


def _admin(existing: Existing) -> dict[str, Any] | None:
    admin = existing.firstboot.get("admin_interface")
    return admin if isinstance(admin, dict) else None


def apply_answer(plan: InstallPlan, root: Path) -> dict[str, Any] | None:
    """What the upgrade's answer file sets, over the carried settings; the management
    interface for first boot (the answer file's, else the old one) is returned."""
    answer, existing = plan.answer, _existing(plan)
    admin = _admin(existing)
    if answer.hostname:
        configure.write_hostname(root, answer.hostname)
    if answer.admin_interface is not None:
        nic = configure.management_nic(plan)
        configure.write_network(root, answer, nic)
        admin = configure.admin_description(answer.admin_interface, nic)
    if answer.name_servers:
        proto = str((admin or {}).get("proto", Proto.DHCP.value))
        configure.write_dns(root, answer.name_servers, Proto(proto))
    configure.write_ntp(root, answer.ntp_servers)
    if answer.timezone:
        configure.set_timezone(root, answer.timezone)
    if answer.keymap != DEFAULT_KEYMAP:
        configure.write_keyboard(root, answer.keymap)
    hashed = configure.password_hash(answer)
    if hashed is not None:
        configure.set_root_password(root, hashed)
    return admin


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def rearm_first_boot(
    plan: InstallPlan,
    root: Path,
    version: str,
    admin: dict[str, Any] | None,
    hostname: str | None,
) -> None:
    """firstboot.json for ``version`` with this run's server and token, the state not
    done with the SR uuid kept, no agent credential: the next boot reports ``running``."""
    existing = _existing(plan)
    mac = plan.network.host_mac or _text(existing.firstboot.get("mac"))
    if not plan.args.server:
        log.warning("no netinstall.server=: first boot keeps the SR but reports to nobody")
    elif mac is None:
        raise NetinstallError("the MAC address of the management NIC is unknown")
    configure.write_firstboot(
        root,
        {
            "server": plan.args.server,
            "mac": mac.lower() if mac else None,
            "token": plan.install_key,  # the enrolled key, never the install token
            "payload_version": version,
            "sr": existing.firstboot.get("sr"),
            "admin_interface": admin,
            "hostname": hostname,
        },
    )
    configure.write_update_key(root, plan.update_key)
    state = root / STATE
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"done": False, "sr_uuid": existing.sr_uuid}, indent=2) + "\n")
    state.chmod(0o644)
    (root / AGENT_CONFIG).unlink(missing_ok=True)
    (root / FIRSTBOOT_DONE).unlink(missing_ok=True)
    log.info(
        "first boot armed: reports netinstall %s; SR uuid %s kept",
        version,
        existing.sr_uuid or "(none yet)",
    )


def carry_settings(plan: InstallPlan, saved: Path, version: str) -> None:
    """Step (upgrade): the saved settings over the new payload, the answer file's on top."""
    existing, root = _existing(plan), plan.paths.target
    if not saved.is_dir():
        raise NetinstallError("the settings of the old root were not saved")
    names = settings_in(saved)
    for rel in names:
        if rel != SHADOW:
            copy_preserving(saved / rel, root / rel)
    entry = root_entry(saved / SHADOW) if SHADOW in names else None
    if entry is not None:
        replace_root_entry(root / SHADOW, entry)
    admin = apply_answer(plan, root)
    configure.enable_openvswitch(root)
    hostname = plan.answer.hostname or _text(existing.firstboot.get("hostname"))
    rearm_first_boot(plan, root, version, admin, hostname)
    log.info("carried over to the new root: %s", ", ".join(names) or "nothing")


def restore_settings(plan: InstallPlan) -> None:
    """Step (restore): the restored system's first boot armed again; its settings are its own."""
    existing = _existing(plan)
    hostname = _text(existing.firstboot.get("hostname"))
    rearm_first_boot(plan, plan.paths.target, existing.version, _admin(existing), hostname)
