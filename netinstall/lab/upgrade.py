"""The upgrade scenario: after installing version A, upgrade to B through the agent, restore A.

Runs on the lab machine left running by the fresh install (``demo._run``):

1. log in on the serial console (``shell.SerialShell``), write a marker into the
   local SR (a file on an ext SR, a logical volume on an lvm SR) and change a
   setting (the host name);
2. ``netinstall host upgrade MAC --version B`` and make the agent check in now;
   the agent stages the installer and ``grub-reboot``s into it, the installer
   upgrades in place and the machine boots B, whose first boot reports running;
3. check that B runs (its release file and its report), the marker and the
   setting survived, and the backup partition holds A (at the end, from the disk);
4. ``netinstall host restore MAC``, the same way back, and check A runs again.

Every phase's milestones go into the first tracker's table, prefixed with the
phase's name.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from common.errors import NetinstallError
from common.process import run
from netinstall.lab import console, qemu, services, utility
from netinstall.lab.console import Tracker
from netinstall.lab.diskview import mounted, read_only_disk
from netinstall.lab.follow import Follower
from netinstall.lab.scenario import ROOT_PASSWORD
from netinstall.lab.shell import SerialShell
from pxe_server.registry import Registry

NEW_HOST_NAME = "lab01b"
DISK = "vda"  # the lab disk in dom0 (scenario.Scenario.variables)
MARKER = "netinstall-lab-marker"
PHASE_TIMEOUT = 1800.0


def sr_marker_commands(sr_type: str, sr_uuid: str, token: str) -> tuple[str, str]:
    """Shell lines that write ``token`` into the SR, and that read it back (pure)."""
    if sr_type == "ext":
        path = f"/var/run/sr-mount/{sr_uuid}/{MARKER}"
        return f"echo {token} > {path} && sync", f"cat {path}"
    volume = f"/dev/VG_XenStorage-{sr_uuid}/{MARKER}"
    write = (
        f"lvcreate --yes -L 4M -n {MARKER} VG_XenStorage-{sr_uuid} >/dev/null && "
        f"echo {token} | dd of={volume} conv=fsync status=none"
    )
    read = f"vgchange -ay VG_XenStorage-{sr_uuid} >/dev/null && head -n 1 {volume}"
    return write, read


def _cli(server_dir: Path, *args: str) -> None:
    run([*services.netinstall_command(), *args, "--dir", str(server_dir)])


def _phase(
    follower: Follower, first: Tracker, name: str, timeout: float = PHASE_TIMEOUT
) -> tuple[Tracker, str | None]:
    """Follow one agent-driven phase until running; its milestones go into ``first``."""
    tracker = Tracker()
    follower.prefix = f"{name}: "
    reason = follower.follow(tracker, console.RUNNING, timeout)
    follower.prefix = ""
    renamed = {console.NETWORK_BOOT: "signalled", console.XEN_NETWORK: "Xen (installer)"}
    for milestone, at in tracker.reached.items():
        first.reached[f"{name}: {renamed.get(milestone, milestone)}"] = at
    return tracker, reason


def _running_version(server_dir: Path, mac: str) -> str | None:
    with Registry.open(server_dir) as registry:
        host = registry.get_host(mac)
    return host.running_version if host is not None else None


def _release_version(shell: SerialShell) -> str:
    return shell.check(". /etc/netinstall-release && echo $VERSION").strip().splitlines()[-1]


def check_utility(
    shell: SerialShell, kept: utility.Utility | None, checks: list[str], when: str
) -> str | None:
    """From dom0: the utility partition (partition 1 of the disk) hashes as written."""
    if kept is None:
        return None
    found = shell.check(utility.dom0_hash_command(DISK)).split()
    if kept.sha256 not in found:
        return f"{when}: the utility partition hashes {found[:1]}, written {kept.sha256}"
    checks.append(f"{when}: utility partition /dev/{DISK}1 byte for byte as written (dom0)")
    return None


def _check_system(
    shell: SerialShell,
    version: str,
    marker: tuple[str, str],
    checks: list[str],
    when: str,
    *,
    kept: utility.Utility | None,
) -> str | None:
    """Log in again: ``version`` runs, the SR marker (read command, token) and host name
    held, the utility partition (``kept``) untouched."""
    read_marker, token = marker
    shell.login(ROOT_PASSWORD)
    if why := check_utility(shell, kept, checks, when):
        return why
    found = _release_version(shell)
    if found != version:
        return f"{when}: /etc/netinstall-release says {found!r}, expected {version!r}"
    seen = shell.check(read_marker).strip()
    if token not in seen:
        return f"{when}: the SR marker reads {seen!r}, expected {token!r}"
    host_name = shell.check("hostname").strip().splitlines()[-1]
    if host_name != NEW_HOST_NAME:
        return f"{when}: the host name is {host_name!r}, expected {NEW_HOST_NAME!r}"
    checks.append(f"{when}: release {found}, SR marker intact, host name {host_name}")
    return None


def upgrade_and_restore(
    follower: Follower,
    machine: qemu.Machine,
    first: Tracker,
    *,
    start_version: str,
    target: str | None,
    server_dir: Path,
    checks: list[str],
    kept: utility.Utility | None = None,
) -> str | None:
    """Steps 1 to 4 of the module docstring; None when all of it held, else why not.
    ``kept``: the disk's utility partition, hashed from dom0 after each phase."""
    if target is None or machine.console is None:
        raise NetinstallError("the upgrade scenario needs a target version and a console socket")
    mac = follower.mac
    sr_type, sr_uuid = first.facts.get("sr_type"), first.facts.get("sr_uuid")
    if not sr_type or not sr_uuid:
        return "the fresh install printed no SR: nothing to keep a marker in"
    token = secrets.token_hex(8)
    write_marker, read_marker = sr_marker_commands(sr_type, sr_uuid, token)
    shell = SerialShell(machine.console, machine.serial)
    try:
        shell.login(ROOT_PASSWORD)
        if why := check_utility(shell, kept, checks, f"after installing {start_version}"):
            return why
        shell.check(write_marker)
        shell.check(f"echo {NEW_HOST_NAME} > /etc/hostname && hostname {NEW_HOST_NAME}")
        first.reached["marker and host name written"] = follower.now()
        checks.append(f"{start_version}: SR marker {token} written, host name {NEW_HOST_NAME}")

        follower.skip_events()  # the agent's check-ins so far belong to no phase
        _cli(server_dir, "host", "upgrade", mac, "--version", target)
        shell.check("systemctl restart netinstall-agent")  # check in now, not in 5 minutes
        _, reason = _phase(follower, first, "upgrade")
        if reason is not None:
            return f"upgrade to {target}: {reason}"
        if (running := _running_version(server_dir, mac)) != target:
            return f"after the upgrade the host reports {running!r}, expected {target!r}"
        marker = (read_marker, token)
        if why := _check_system(shell, target, marker, checks, "after the upgrade", kept=kept):
            return why

        follower.skip_events()
        _cli(server_dir, "host", "restore", mac)
        shell.check("systemctl restart netinstall-agent")
        _, reason = _phase(follower, first, "restore")
        if reason is not None:
            return f"restore: {reason}"
        if (running := _running_version(server_dir, mac)) != start_version:
            return f"after the restore the host reports {running!r}, expected {start_version!r}"
        return _check_system(shell, start_version, marker, checks, "after the restore", kept=kept)
    finally:
        shell.close()


def check_backup(disk: Path, version: str, checks: list[str], number: int = 2) -> str | None:
    """After the run (the VM stopped): the backup partition (``number``) holds ``version``."""
    try:
        with read_only_disk(disk) as loop, mounted(f"{loop}p{number}") as backup:
            marker = backup / ".netinstall-backup.json"
            if not marker.is_file():
                return "the backup partition has no .netinstall-backup.json"
            held = json.loads(marker.read_text("utf-8")).get("version")
            release = (backup / "etc/netinstall-release").read_text("utf-8")
    except (NetinstallError, OSError, ValueError) as exc:
        return f"the backup partition could not be read: {exc}"
    if held != version or f"VERSION={version}" not in release:
        return f"the backup partition holds {held!r}, expected {version!r}"
    checks.append(f"the backup partition holds {version} (its marker and release file)")
    return None


def next_version(version: str) -> str:
    """The version B the scenario upgrades to: A's minor number plus one (0.1.0 -> 0.2.0)."""
    parts = version.split(".")
    if len(parts) >= 2 and parts[1].isdigit():
        return ".".join([parts[0], str(int(parts[1]) + 1), *(["0"] * (len(parts) - 2))])
    return f"{version}.1"


def build_target(out: Path, cache: Path, start_version: str) -> Path:
    """Build repository B from A's cached dom0 (``images build --only repo``); its path."""
    from netinstall.build import build  # noqa: PLC0415 - the builders are heavy, and for the lab only

    version = next_version(start_version)
    where = out / f"payload-{version}"
    build(where, cache, only="repo", payload_version=version)
    return where / "repo"
