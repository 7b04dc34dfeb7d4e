"""Following a lab machine: its serial console and its host's events, phase after phase."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netinstall.lab import console, services, usernet
from netinstall.lab.console import Tracker
from pxe_server.registry import Registry

Say = Callable[[str], None]
REBOOT_ACTION = "reboot=shutdown"  # on QEMU's command line: a guest reboot ends QEMU
log = logging.getLogger(__name__)


@dataclass
class Follower:
    """Follows one VM's console and its host's events, phase after phase.

    The console offset and the events already seen carry over from one
    ``follow`` call to the next, so each phase's ``Tracker`` sees only its own.
    Times are seconds since ``start`` (the VM's start) in every phase.
    """

    vm: services.Child
    server: services.Child
    server_dir: Path
    mac: str
    start: float
    say: Say
    export: usernet.Export | None = None
    prefix: str = ""  # put before each milestone announced (the phase's name)
    serial: console.SerialLog = field(init=False)
    seen_events: int = 0
    interval: float = 0.5  # seconds between two looks at the console and the registry
    power_ons: int = 0  # QEMU started again after a guest reboot or by the lab

    def __post_init__(self) -> None:
        serial = vm_serial(self.vm)
        self.serial = console.SerialLog(
            serial, timed=serial.with_name(console.TIMED_LOG), clock=self.now
        )

    def skip_events(self) -> None:
        """Ignore the events logged so far (a new phase starts from here)."""
        with Registry.open(self.server_dir) as registry:
            self.seen_events = len(registry.events(self.mac))

    def power_on(self, log_path: Path | None = None) -> None:
        """Start the machine's QEMU again, the same command line (its disk, firmware
        variables and console file): a power-on after QEMU ended. Its output goes to
        ``log_path``, else it is appended to the last QEMU's."""
        vm = self.vm
        path = vm.log_path if log_path is None else log_path
        self.vm = services.Child("qemu", vm.argv, path, append=log_path is None, before=vm.before)
        self.power_ons += 1
        log.info("QEMU powered on again (%d): %s", self.power_ons, path)

    def now(self) -> float:
        return time.monotonic() - self.start

    def revive(self) -> str | None:
        """Power the machine on again if its QEMU ended because the guest rebooted (a
        reboot is a power cycle in the lab, qemu.py); why not, if QEMU ended otherwise."""
        if (code := self.vm.exited()) is None:
            return None
        if code == 0 and REBOOT_ACTION in self.vm.argv:
            self.power_on()
            return None
        return f"QEMU exited with status {code}: {self.vm.output().strip()[-500:]}"

    def follow(
        self,
        tracker: Tracker,
        until: str,
        timeout: float,
        stop: Callable[[Tracker], bool] | None = None,
    ) -> str | None:
        """Follow until ``until`` (None), or until ``stop`` holds (None too), or a failure,
        QEMU or the server ending, the time limit (``timeout`` seconds from now): why not."""
        announced: set[str] = set(tracker.reached)
        deadline = time.monotonic() + timeout
        with Registry.open(self.server_dir) as registry:
            while True:
                now = self.now()
                events = registry.events(
                    self.mac
                )  # before the console: a report precedes its reboot
                for event in events[self.seen_events :]:  # timed when first seen
                    tracker.event(event.state.value, event.step, event.message, now)
                self.seen_events = len(events)
                if self.export is not None and events:
                    self.export.refresh(events[-1].state.value)  # user mode: configs follow
                for text in self.serial.read():
                    tracker.line(text, now)
                for name, at in tracker.reached.items():
                    if name not in announced:
                        announced.add(name)
                        self.say(f"[{at:7.1f} s] {self.prefix}{name}")
                if until in tracker.reached:  # FAILED too, when the run must fail
                    if until == console.RUNNING:
                        _drain(self.serial, tracker, self.start)
                    return None
                if stop is not None and stop(tracker):
                    return None
                if tracker.failure is not None:
                    return tracker.failure
                if (why := self.revive()) is not None:
                    return why
                if (code := self.server.exited()) is not None:
                    return f"the server exited with status {code} (see {self.server.log_path})"
                if time.monotonic() > deadline:
                    return f"no {until!r} within {timeout:g} s"
                time.sleep(self.interval)


def vm_serial(vm: services.Child) -> Path:
    """The serial console file named on QEMU's command line."""
    for arg in vm.argv:
        if arg.startswith("file:"):
            return Path(arg.removeprefix("file:"))
        if arg.startswith("file,id=con0,") and (path := re.search(r"path=([^,]+)", arg)):
            return Path(path.group(1))
        if arg.startswith("socket,id=con0,") and (log_file := re.search(r"logfile=([^,]+)", arg)):
            return Path(log_file.group(1))
    raise ValueError("QEMU has no serial file")


def _drain(serial: console.SerialLog, tracker: Tracker, start: float, seconds: float = 5) -> None:
    """Console lines may trail the registry: read them a few seconds more."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and console.SR_CREATED not in tracker.reached:
        for text in serial.read():
            tracker.line(text, time.monotonic() - start)
        time.sleep(0.5)
