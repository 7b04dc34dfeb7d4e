"""Following a lab machine: its serial console and its host's events, phase after phase."""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from netinstall.lab import console, services, usernet
from netinstall.lab.console import Tracker
from netinstall.lab.shutdowns import GUEST_SHUTDOWN, ShutdownWatch
from pxe_server.registry import Registry

Say = Callable[[str], None]
REBOOT_ACTION = "reboot=shutdown"  # on QEMU's command line: a guest reboot ends QEMU
POWERED_ON = "powered on by its BMC"  # the milestone of the first power-on through a BMC
OFF_LIMIT = 60.0  # seconds a machine with a BMC may stay off while it is followed
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launch:
    """How the machine's QEMU starts: its command line, its log, what runs before it."""

    argv: list[str]
    log_path: Path
    before: Callable[[], None] | None = None


@dataclass(frozen=True)
class PowerChange:
    """A power change the machine's BMC asked for: on (with the command line to start,
    network or disk first) or off; ``why`` says who asked, for the run's output."""

    on: bool
    argv: list[str] | None
    why: str


class PowerRequests(Protocol):
    """The lab BMC's side (lab/bmc.py): the changes asked for since the last look, and
    word that the guest powered the machine off by itself (the BMC must say off)."""

    def take(self) -> list[PowerChange]: ...

    def machine_off(self) -> None: ...


@dataclass
class Follower:
    """Follows one VM's console and its host's events, phase after phase.

    The console offset and the events already seen carry over from one
    ``follow`` call to the next, so each phase's ``Tracker`` sees only its own.
    Times are seconds since ``start`` (the VM's start) in every phase.

    ``qemu`` is the running QEMU, or None while the machine is off: a machine with a
    BMC (``bmc``) starts off, and ``launch`` says how to start it when its BMC asks.
    The follower carries out the BMC's requests between two looks at the console, in
    the thread that also starts QEMU again after a guest reboot, so a power-on never
    races a reboot's restart.
    """

    qemu: services.Child | None
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
    launch: Launch | None = None  # None: the first QEMU's (``qemu`` is then needed)
    bmc: PowerRequests | None = None
    off_since: float | None = None  # when the machine went off (monotonic)
    # QEMU's event socket (qemu.Machine.events): why each QEMU the follower starts ended.
    events: Path | None = None
    watch: ShutdownWatch | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.launch is None:
            if self.qemu is None:
                raise ValueError("a machine that is off needs its launch")
            self.launch = Launch(self.qemu.argv, self.qemu.log_path, self.qemu.before)
        if self.qemu is None:
            self.off_since = time.monotonic()
        serial = vm_serial(self.launch.argv)
        self.serial = console.SerialLog(
            serial, timed=serial.with_name(console.TIMED_LOG), clock=self.now
        )

    @property
    def vm(self) -> services.Child:
        """The running (or last) QEMU; RuntimeError while the machine is off."""
        if self.qemu is None:
            raise RuntimeError("the lab machine is off")
        return self.qemu

    def skip_events(self) -> None:
        """Ignore the events logged so far (a new phase starts from here)."""
        with Registry.open(self.server_dir) as registry:
            self.seen_events = len(registry.events(self.mac))

    def power_on(self, log_path: Path | None = None, argv: list[str] | None = None) -> None:
        """Start the machine's QEMU again, the same command line (its disk, firmware
        variables and console file) unless ``argv`` replaces it (a BMC's boot order):
        a power-on after QEMU ended. Its output goes to ``log_path``, else it is appended
        to the last QEMU's."""
        launch = self.launch or Launch(self.vm.argv, self.vm.log_path, self.vm.before)
        if self.watch is not None:  # the last QEMU's, ended before the new one listens
            self.watch.close()
            self.watch = None
        if argv is not None:
            launch = replace(launch, argv=argv)
        self.launch = launch
        path = launch.log_path if log_path is None else log_path
        self.qemu = services.Child(
            "qemu", launch.argv, path, append=log_path is None, before=launch.before
        )
        self.off_since = None
        if self.events is not None:
            self.watch = ShutdownWatch(self.events)
        self.power_ons += 1
        log.info("QEMU powered on again (%d): %s", self.power_ons, path)

    def power_off(self) -> None:
        """QEMU quits (``quit`` on its monitor, else it is stopped): the machine is off."""
        if self.qemu is not None:
            services.quit_qemu(self.qemu, monitor_socket(self.qemu.argv))
        self.qemu = None
        self.off_since = time.monotonic()

    def apply_power(self, tracker: Tracker) -> None:
        """Carry out what the machine's BMC asked for since the last look: start QEMU if
        it is not running (never a second one), stop it if it is."""
        if self.bmc is None:
            return
        for change in self.bmc.take():
            running = self.qemu is not None and self.qemu.exited() is None
            if change.on and not running:
                self.power_on(argv=change.argv)
                tracker.reached.setdefault(POWERED_ON, self.now())
                self.say(f"[{self.now():7.1f} s] QEMU started: {change.why}")
            elif not change.on and self.qemu is not None:
                self.power_off()
                self.say(f"[{self.now():7.1f} s] QEMU stopped: {change.why}")

    def now(self) -> float:
        return time.monotonic() - self.start

    def revive(self) -> str | None:
        """Power the machine on again if its QEMU ended because the guest rebooted (a
        reboot is a power cycle in the lab, qemu.py), leave it off if the guest powered
        off (told by QEMU's event socket, when it has one); why not, if QEMU ended
        otherwise."""
        if self.qemu is None:  # off: nothing ended by itself
            if self.off_since is not None and time.monotonic() - self.off_since > OFF_LIMIT:
                return f"the machine stayed off for {OFF_LIMIT:g} s: its BMC did not power it on"
            return None
        if (code := self.qemu.exited()) is None:
            return None
        if code == 0 and REBOOT_ACTION in self.qemu.argv:
            if self.watch is not None and self.watch.ended_by() == GUEST_SHUTDOWN:
                self.qemu = None  # the guest powered off: it stays off, and its BMC says so
                self.off_since = time.monotonic()
                if self.bmc is not None:
                    self.bmc.machine_off()
                self.say(f"[{self.now():7.1f} s] the guest powered the machine off")
                return None
            self.power_on()
            return None
        return f"QEMU exited with status {code}: {self.qemu.output().strip()[-500:]}"

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
                self.apply_power(tracker)
                if (why := self.revive()) is not None:
                    return why
                if (code := self.server.exited()) is not None:
                    return f"the server exited with status {code} (see {self.server.log_path})"
                if time.monotonic() > deadline:
                    return f"no {until!r} within {timeout:g} s"
                time.sleep(self.interval)


def monitor_socket(argv: list[str]) -> Path:
    """The monitor's unix socket named on QEMU's command line (``-monitor unix:PATH,...``)."""
    for option, value in itertools.pairwise(argv):
        if option == "-monitor" and value.startswith("unix:"):
            return Path(value.removeprefix("unix:").split(",", 1)[0])
    raise ValueError("QEMU has no monitor socket")


def vm_serial(argv: list[str]) -> Path:
    """The serial console file named on QEMU's command line."""
    for arg in argv:
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
