"""The multipath scenarios' second half: lose a path while the installed host runs.

After the host installed onto its two-path LUN booted and reported running:

1. log in on the serial console and see the root map with both paths working;
2. take a path away: ``device_del`` the first SCSI path on the QEMU monitor (the
   controller the firmware booted from; ``qemu.multipath_disk``), or, for iSCSI
   multipath, take the target's second portal off the storage network
   (``san.Target.drop_portal``: its session hears nothing more, as when a SAN
   switch fails);
3. wait until dom0's multipathd shows one working path (``multipathd show topology``:
   the daemon's own view, which the agent reports; ``multipath -ll`` runs a checker
   of its own and may see the loss up to a polling interval before the daemon does),
   write and fsync a file on the root filesystem (I/O goes on through the other
   path), and make the agent check in now, so the host reports its paths to the server;
4. the server's record of the host names the map with one working path left;
5. reboot with the path still gone (the firmware boots over the one left: iPXE
   tries every sanboot URI, the iBFT still names both portals and dom0's
   ``iscsistart -b`` goes on past the one that does not answer), and see dom0 come
   up with its root on the map again, one path under it, and the agent check in
   from that boot.

Every milestone goes into the run's tracker.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from pathlib import Path

from common.errors import NetinstallError
from netinstall.lab import qemu, services
from netinstall.lab.console import Tracker
from netinstall.lab.follow import Follower
from netinstall.lab.scenario import ROOT_PASSWORD
from netinstall.lab.shell import SerialShell
from pxe_server.checkin import WORKING_PATH_STATES
from pxe_server.registry import Registry

# multipath -ll, multipathd show topology: "|- 2:0:0:1 sda 8:0 active ready running"
_PATH_LINE = re.compile(r"\d+:\d+:\d+:\d+\s+(sd[a-z]+)\s+\d+:\d+\s+(\S+)\s+(\S+)")
LOSS_TIMEOUT = 300.0  # a silent iSCSI portal: the session's recovery timeout, then the checker
REPORT_TIMEOUT = 120.0
BOOT_TIMEOUT = 900.0  # a reboot into Xen + dom0 under TCG, then the agent's check-in


def map_paths(multipath_ll: str) -> list[str]:
    """The path devices ``multipath -ll`` lists as working (pure)."""
    return [
        device
        for device, dm_state, checker in _PATH_LINE.findall(multipath_ll)
        if dm_state == "active" and checker in WORKING_PATH_STATES
    ]


def reported_paths(facts: object) -> dict[str, list[str]] | None:
    """map -> working path devices from a host's reported ``multipath`` facts (None: none
    yet)."""
    if not isinstance(facts, dict) or not isinstance(facts.get("multipath"), list):
        return None
    found: dict[str, list[str]] = {}
    for entry in facts["multipath"]:
        if isinstance(entry, dict) and isinstance(entry.get("paths"), list):
            found[str(entry.get("name"))] = [
                str(p.get("device"))
                for p in entry["paths"]
                if isinstance(p, dict) and p.get("state") in WORKING_PATH_STATES
            ]
    return found


def _host(server_dir: Path, mac: str) -> tuple[dict[str, list[str]] | None, float]:
    """The host's reported working paths and the time of its last check-in."""
    with Registry.open(server_dir) as registry:
        host = registry.get_host(mac)
    if host is None:
        return None, 0.0
    return reported_paths(host.facts), host.last_checkin or 0.0


def remove_qemu_path(machine: qemu.Machine) -> str:
    """Unplug the first SCSI path (the firmware's boot disk) on the QEMU monitor."""
    services.monitor_command(machine.monitor, f"device_del {qemu.PATHS[0]}")
    return f"SCSI path {qemu.PATHS[0]} unplugged"


def _wait_reported(
    follower: Follower, since: float, timeout: float
) -> tuple[dict[str, list[str]] | None, str | None]:
    """Wait for a check-in after ``since`` that reports a map with one working path,
    powering the machine on again when its reboot ended QEMU (``Follower.revive``)."""
    deadline = time.monotonic() + timeout
    while True:
        if (why := follower.revive()) is not None:
            return None, why
        reported, checked_in = _host(follower.server_dir, follower.mac)
        if checked_in > since and reported and any(len(p) == 1 for p in reported.values()):
            return reported, None
        if time.monotonic() > deadline:
            return reported, f"the host never reported one working path (it reports {reported})"
        time.sleep(2)


def lose_a_path(
    follower: Follower,
    machine: qemu.Machine,
    tracker: Tracker,
    *,
    checks: list[str],
    remove: Callable[[], str],
) -> str | None:
    """Steps 1 to 5 of the module docstring; None when all of it held, else why not."""
    if machine.console is None:
        raise NetinstallError("the multipath scenario needs a console socket")
    shell = SerialShell(machine.console, machine.serial)
    try:
        shell.login(ROOT_PASSWORD)
        before = map_paths(shell.check("multipath -ll"))
        if len(before) != 2:
            return f"dom0's root map has the working paths {before}, expected two"
        checks.append(f"dom0's root map has two paths: {', '.join(before)}")
        tracker.reached["two paths seen"] = follower.now()
        checks.append(remove())
        tracker.reached["path removed"] = follower.now()
        deadline = time.monotonic() + LOSS_TIMEOUT
        while len(after := map_paths(shell.check("multipathd show topology"))) != 1:
            if time.monotonic() > deadline:
                return f"a path is gone, but dom0's map still lists {after} as working"
            time.sleep(2)
        tracker.reached["one path left"] = follower.now()
        shell.check("dd if=/dev/urandom of=/root/after-path-loss bs=1M count=8 "
                    "conv=fsync status=none && sync")  # fmt: skip
        checks.append(f"after losing a path: map on {', '.join(after)}, a write on root synced")
        since = time.time()
        shell.check("systemctl restart netinstall-agent")  # check in now, not in 5 minutes
        reported, why = _wait_reported(follower, since, REPORT_TIMEOUT)
        if why is not None:
            return why
        tracker.reached["lost path reported"] = follower.now()
        checks.append(f"the host reported its paths: {reported}")
        return _reboot_on_one_path(follower, shell, tracker, checks)
    finally:
        shell.close()


def _reboot_on_one_path(
    follower: Follower, shell: SerialShell, tracker: Tracker, checks: list[str]
) -> str | None:
    """Step 5: reboot with one path present; dom0's root is on the map, over that path."""
    since = time.time()
    with contextlib.suppress(NetinstallError):  # the console may go before the end tag
        shell.run("systemctl reboot", timeout=60)
    tracker.reached["reboot on one path"] = follower.now()
    reported, why = _wait_reported(follower, since, BOOT_TIMEOUT)
    if why is not None:
        return f"after the reboot on one path: {why}"
    tracker.reached["one path: checked in"] = follower.now()
    shell.login(ROOT_PASSWORD)
    root = shell.check("findmnt -n -o SOURCE /").strip().splitlines()[-1]
    paths = map_paths(shell.check("multipath -ll"))
    if not root.startswith("/dev/mapper/") or len(paths) != 1:
        return f"after the reboot on one path: root is {root}, the map's paths {paths}"
    checks.append(f"rebooted on one path: root {root} over {paths[0]}, reported {reported}")
    return None
