"""The multipath scenario's second half: lose a path while the installed host runs.

After the host installed onto its two-path LUN (``qemu.multipath_disk``) booted
and reported running:

1. log in on the serial console and see the root map with both paths;
2. ``device_del`` the first path on the QEMU monitor (the controller the
   firmware booted from);
3. wait until dom0's multipath shows one path, write and fsync a file on the
   root filesystem (I/O goes on through the other path), and make the agent
   check in now, so the host reports its paths to the server;
4. the server's record of the host names the map with one path left.

Every milestone goes into the run's tracker.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from netinstall.errors import NetinstallError
from netinstall.lab import qemu, services
from netinstall.lab.console import Tracker
from netinstall.lab.follow import Follower
from netinstall.lab.scenario import ROOT_PASSWORD
from netinstall.lab.shell import SerialShell
from pxe_server.registry import Registry

_PATH_LINE = re.compile(r"\d+:\d+:\d+:\d+\s+(sd[a-z]+)\s")
LOSS_TIMEOUT = 120.0
REPORT_TIMEOUT = 120.0


def map_paths(multipath_ll: str) -> list[str]:
    """The path devices ``multipath -ll`` lists (pure)."""
    return _PATH_LINE.findall(multipath_ll)


def reported_paths(facts: object) -> dict[str, list[str]] | None:
    """map -> path devices from a host's reported ``multipath`` facts (None: none yet)."""
    if not isinstance(facts, dict) or not isinstance(facts.get("multipath"), list):
        return None
    found: dict[str, list[str]] = {}
    for entry in facts["multipath"]:
        if isinstance(entry, dict) and isinstance(entry.get("paths"), list):
            found[str(entry.get("name"))] = [str(p.get("device")) for p in entry["paths"]
                                              if isinstance(p, dict)]  # fmt: skip
    return found


def _reported(server_dir: Path, mac: str) -> dict[str, list[str]] | None:
    with Registry.open(server_dir) as registry:
        host = registry.get_host(mac)
    return reported_paths(host.facts if host is not None else None)


def lose_a_path(
    follower: Follower,
    machine: qemu.Machine,
    tracker: Tracker,
    *,
    server_dir: Path,
    checks: list[str],
) -> str | None:
    """Steps 1 to 4 of the module docstring; None when all of it held, else why not."""
    if machine.console is None:
        raise NetinstallError("the multipath scenario needs a console socket")
    shell = SerialShell(machine.console, machine.serial)
    try:
        shell.login(ROOT_PASSWORD)
        before = map_paths(shell.check("multipath -ll"))
        if len(before) != 2:
            return f"dom0's root map has the paths {before}, expected two"
        checks.append(f"dom0's root map has two paths: {', '.join(before)}")
        tracker.reached["two paths seen"] = follower.now()
        services.monitor_command(machine.monitor, f"device_del {qemu.PATHS[0]}")
        tracker.reached["path removed"] = follower.now()
        deadline = time.monotonic() + LOSS_TIMEOUT
        while len(after := map_paths(shell.check("multipath -ll"))) != 1:
            if time.monotonic() > deadline:
                return f"after device_del dom0's map still lists {after}"
            time.sleep(2)
        tracker.reached["one path left"] = follower.now()
        shell.check("dd if=/dev/urandom of=/root/after-path-loss bs=1M count=8 "
                    "conv=fsync status=none && sync")  # fmt: skip
        checks.append(f"after losing a path: map on {', '.join(after)}, a write on root synced")
        shell.check("systemctl restart netinstall-agent")  # check in now, not in 5 minutes
        deadline = time.monotonic() + REPORT_TIMEOUT
        while True:
            reported = _reported(server_dir, follower.mac)
            if reported is not None and any(len(p) == 1 for p in reported.values()):
                break
            if time.monotonic() > deadline:
                return f"the host never reported the lost path (it reports {reported})"
            time.sleep(2)
        tracker.reached["lost path reported"] = follower.now()
        checks.append(f"the host reported its paths: {reported}")
        return None
    finally:
        shell.close()
