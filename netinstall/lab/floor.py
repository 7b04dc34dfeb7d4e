"""The floor of an install (issue 18), measured in the lab run it is compared with.

An install cannot be faster than the sum of three things the run measures itself:

1. power-on to the installer up: the run's own ``installer up`` milestone (the boot
   files come the way the server offers them: over HTTP where the firmware can);
2. the payload's bytes written at the disk's own rate: every file the installer
   downloads (``.treeinfo``'s checksummed files), divided by the rate ``dd`` writes
   the target disk at inside that installer (``rate_script``: an installation-start
   script of the lab's, run before the installer partitions the disk);
3. Xen from disk to the agent's first check-in, on a boot with nothing left to do at
   first boot: once the host runs and its agent checked in, the lab leaves the disk as a
   clean shutdown would (``quiesce``: the kernel's SysRq sync, then remount read-only),
   powers the machine off and on (``floor_boot``: QEMU quits, the same command line
   starts again) and times its next boot from Xen's banner to the check-in. A bare
   reset left root's and /var/log's ext4 journals to replay: on BIOS that alone made
   the floor boot about 25 s longer than the first boot's way to /init.

Why a power cycle and not ``system_reset``: a reset keeps QEMU's TCG translation cache,
and the next boot pays for every translated block of the previous one it writes over
(``info jit``: 1.5 million blocks after a 90 s dom0, half a million invalidated by the
next Xen before dom0 starts). Measured on one kept UEFI disk, Xen's banner to dom0's
kernel: 9.1 s from a fresh QEMU (7 s of it the boot scrub, the host backing the RAM),
3.5 s after a reset 2 s into dom0, 12.1 s after 25 s of dom0, 33.2 s after 90 s of dom0
(the E820 map to the ACPI tables 0.3 -> 18.5 s, dom0's construction 0.15 -> 11.3 s);
the dom0 kernel's own boot slowed the same way (to /init 6 -> 13 s). That
made the floor boot 30-40 s slower than the install's first boot, an emulator cost
with no counterpart on a real server. Every power-on, the first one too, backs the
machine's RAM up front (``prealloc=on``, in ``qemu.argv``), so both boots' scrubs see
RAM the host already holds.

``floor_lines`` prints the floor and the ratio power-on to ``running`` / floor under
the demo's phase table. The dd writes ``RATE_BYTES`` of zeros at ``RATE_OFFSET`` of
the lab's blank disk before the install partitions it: a lab-only measurement on a
disk that holds nothing (a real installer never writes before the payload verified).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypervisor_payload.treeinfo import parse_treeinfo
from netinstall.lab import console, services
from netinstall.lab.console import Tracker, clean
from netinstall.lab.follow import Follower
from pxe_server.registry import Registry

RATE_SCRIPT = "disk-rate.sh"  # under the server's files/scripts/
RATE_BYTES = 128 * 2**20  # written once, with O_DIRECT and a final fdatasync
RATE_BLOCK = 4 * 2**20
RATE_OFFSET = 2**30  # from the start of the blank target disk
# Between the agent's first check-in and the power cycle: ext4 commits its journal every 5 s,
# so what first boot wrote (the agent's credential, firstboot.done) is on the disk.
SETTLE = 6.0
# Before the power cycle: SysRq s (sync) then u (every file system remounted read-only: ext4
# checkpoints its journal and marks itself clean), sent as keys on the emulated keyboard;
# dom0's kernel allows both (Debian's kernel.sysrq=438). The lab waits at most
# QUIESCE_TIMEOUT for the console's "Emergency Remount complete" and powers off anyway.
QUIESCE_KEYS = ("alt-sysrq-s", "alt-sysrq-u")
QUIESCE_TIMEOUT = 30.0
REMOUNT_DONE = re.compile(r"Emergency Remount complete")
FLOOR_QUIESCED = "floor boot: file systems read-only"
FLOOR_RESET = "floor boot: power off and on"
BEFORE_FLOOR_LOG = "serial-before-floor.log"  # the console up to the power cycle
FLOOR_XEN = "floor boot: Xen from disk"
FLOOR_CHECKIN = "floor boot: agent check-in"


def rate_script(device: str) -> str:
    """The installation-start script that measures the write rate of ``device`` with dd."""
    count = RATE_BYTES // RATE_BLOCK
    seek = RATE_OFFSET // RATE_BLOCK
    return f"""#!/bin/sh
# The lab's floor measurement (netinstall/lab/floor.py): how fast this installer writes
# the target disk, before the install partitions it. Lab only: the disk is blank.
dd if=/dev/zero of={device} bs={RATE_BLOCK} count={count} seek={seek} \\
    oflag=direct conv=fdatasync,notrunc 2>&1 | tail -n 1 | sed 's/^/netinstall-lab-disk-rate: /'
"""


def payload_bytes(repo: Path) -> int:
    """The bytes the installer downloads: every file ``.treeinfo`` lists a checksum for."""
    info = parse_treeinfo((repo / ".treeinfo").read_text("utf-8"))
    return sum((repo / name).stat().st_size for name in info.checksums)


@dataclass(frozen=True)
class Floor:
    installer_up: float  # s: power-on to the installer up
    payload: int  # bytes
    rate: float  # bytes/s: dd inside the installer
    boot: float  # s: Xen from disk to the agent's check-in, nothing left to do

    @property
    def write(self) -> float:
        return self.payload / self.rate

    @property
    def total(self) -> float:
        return self.installer_up + self.write + self.boot


def measure(reached: dict[str, float], facts: dict[str, str], payload: int) -> Floor | None:
    """The floor from a run's milestones and facts; None when a part was not measured."""
    needed = (console.INSTALLER_UP, FLOOR_XEN, FLOOR_CHECKIN)
    if any(name not in reached for name in needed) or "disk_rate_bytes" not in facts:
        return None
    seconds = float(facts["disk_rate_seconds"])
    if seconds <= 0:
        return None
    return Floor(
        installer_up=reached[console.INSTALLER_UP],
        payload=payload,
        rate=int(facts["disk_rate_bytes"]) / seconds,
        boot=reached[FLOOR_CHECKIN] - reached[FLOOR_XEN],
    )


def floor_lines(floor: Floor | None, reached: dict[str, float]) -> list[str]:
    """The floor, its parts and the ratio power-on to running / floor."""
    if floor is None:
        return ["floor: not measured (needs the disk rate and the floor boot)"]
    lines = [
        f"floor: power-on to installer up {floor.installer_up:.1f} s"
        f" + payload {floor.payload / 1e6:.1f} MB at {floor.rate / 1e6:.1f} MB/s"
        f" (dd) {floor.write:.1f} s"
        f" + Xen from disk to the agent's check-in {floor.boot:.1f} s"
        f" = {floor.total:.1f} s",
    ]
    if console.RUNNING in reached:
        running = reached[console.RUNNING]
        lines.append(
            f"power-on to running {running:.1f} s = {running / floor.total:.2f}x the floor"
        )
    return lines


def quiesce(
    send: Callable[[str], object],
    lines: Callable[[], list[str]],
    *,
    timeout: float = QUIESCE_TIMEOUT,
    interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Send the SysRq keys and wait (at most ``timeout``) for the console to say the
    emergency remount completed; whether it did."""
    for key in QUIESCE_KEYS:
        send(f"sendkey {key}")
    deadline = clock() + timeout
    while True:
        if any(REMOUNT_DONE.search(text) for text in lines()):
            return True
        if clock() >= deadline:
            return False
        sleep(interval)


def power_cycle(follower: Follower, monitor: Path) -> None:
    """QEMU quits (the machine off) and starts again with the same disk, firmware variables
    and console file (kept as ``BEFORE_FLOOR_LOG`` first): a fresh translation cache."""
    vm = follower.vm
    services.quit_qemu(vm, monitor)
    serial = follower.serial.path
    if serial.exists():
        serial.replace(serial.with_name(BEFORE_FLOOR_LOG))  # QEMU starts the file afresh
    follower.power_on(vm.log_path.with_name("qemu-floor.log"))
    follower.serial = console.SerialLog(
        serial, timed=follower.serial.timed, clock=follower.serial.clock
    )


def floor_boot(follower: Follower, monitor: Path, tracker: Tracker, timeout: float) -> str | None:
    """After ``running``: wait for the agent's first check-in, power the machine off and on
    and time its next boot, Xen from disk to the agent's check-in (None), or say why not.
    ``follower.vm`` is the new QEMU process afterwards."""
    reason = follower.follow(tracker, console.FIRST_CHECKIN, timeout)
    if reason is not None:
        return reason
    time.sleep(SETTLE)

    def lines() -> list[str]:
        read = follower.serial.read()
        for text in read:
            tracker.line(text, follower.now())
        return read

    lines()
    if quiesce(lambda command: services.monitor_command(monitor, command), lines):
        tracker.reached[FLOOR_QUIESCED] = follower.now()
        follower.say(f"[{follower.now():7.1f} s] {FLOOR_QUIESCED}")
    else:
        follower.say(f"floor boot: no 'Emergency Remount complete' within {QUIESCE_TIMEOUT:g} s")
    wall, reset = time.time(), follower.now()
    power_cycle(follower, monitor)
    tracker.reached[FLOOR_RESET] = reset
    follower.say(f"[{reset:7.1f} s] {FLOOR_RESET}")
    deadline = time.monotonic() + timeout
    with Registry.open(follower.server_dir) as registry:
        while True:
            now = follower.now()
            for text in follower.serial.read():
                tracker.line(text, now)
                if FLOOR_XEN not in tracker.reached and console.XEN_BANNER.search(clean(text)):
                    tracker.reached[FLOOR_XEN] = now
                    follower.say(f"[{now:7.1f} s] {FLOOR_XEN}")
            host = registry.get_host(follower.mac)
            checked = host.last_checkin if host is not None else None
            if FLOOR_XEN in tracker.reached and checked is not None and checked > wall:
                at = max(reset + (checked - wall), tracker.reached[FLOOR_XEN])
                tracker.reached[FLOOR_CHECKIN] = at
                follower.say(f"[{at:7.1f} s] {FLOOR_CHECKIN}")
                return None
            if tracker.failure is not None:
                return tracker.failure
            if (code := follower.vm.exited()) is not None:
                return f"QEMU exited with status {code} during the floor boot"
            if time.monotonic() > deadline:
                return f"no check-in within {timeout:g} s of the floor boot's power-on"
            time.sleep(follower.interval)
