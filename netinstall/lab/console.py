"""Milestones of a lab run, from the serial console and the registry's events.

``Tracker`` is pure: feed it console lines (``line``) and registry events
(``event``) with the seconds since the start, and it records the first time each
milestone was reached, facts seen on the way (root and SR UUIDs, the installer's
exit status) and a failure reason when the run cannot succeed any more.
``SerialLog`` follows the file QEMU writes the serial console to. ``phase_table``
formats the milestones for the end of a run: each with its time, the time since the
milestone before it and the time until the next (a step's own duration).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.protocol.messages import ANSWER_FILE_STEP, FIRST_BOOT_STEP, SR_CREATED_STEP

NETWORK_BOOT = "network boot"  # the host fetched its boot config: signalled
XEN_NETWORK = "Xen from the network"  # the installer's Xen banner
INSTALLER_UP = "installer up"
ANSWER_FILE = "answer file fetched"  # the server's own event: the installer fetched it
INSTALLED = "installed"
REBOOT = "reboot"
XEN_DISK = "Xen from disk"
DOM0_DISK = "dom0 up from disk"
SAN_LOGIN = "dom0 logged in to the SAN"  # its initramfs, from the iBFT (SAN scenarios)
SR_CREATED = "SR created"
FIRST_BOOT = "first boot started"  # first boot's report to the server
SR_REPORTED = "SR reported"  # first boot's report that the SR is there (after SR_CREATED)
SR_COMMAND = "SR being made"  # first boot's first LVM command (pvcreate, vgcreate, ...)
RUNNING = "running"
FIRST_CHECKIN = "agent's first check-in"  # the dom0 agent, once first boot handed over
FAILED = "failed"

_XEN = re.compile(r"Xen version 4\.\d+")
XEN_BANNER = _XEN  # Xen's first line on the console, from the network or the disk
_INIT = re.compile(r"netinstall-init: |installer_core: ")
_STEP = re.compile(r"netinstall: step (\S+) \((\d+)/(\d+)\)")
_STEP_END = re.compile(r"netinstall: step (\S+) (?:done in|FAILED after)")
_PERCENT = re.compile(r"^(\S+) (\d+)%$")  # a download progress message: "<file> <n>%"
_EXIT = re.compile(r"netinstall-init: the installer exited with status (\d+)")
_REBOOT = re.compile(
    r"netinstall-init: reboot\b|reboot: Restarting system|Hardware Dom0 shutdown: rebooting"
)
_CMDLINE = re.compile(r"Kernel command line: (.*)|Command line: (.*)")
_ROOT_UUID = re.compile(r"\broot=UUID=([0-9A-Fa-f-]+)")
# iscsistart's "Connection1:0 to [target: ..., portal: ...] ... is operational now", or
# the kernel's line for the session's SCSI host.
_SAN_LOGIN = re.compile(r"Connection\d+:\d+ to \[target: .*operational|iSCSI Initiator over TCP/IP")
_SR = re.compile(r"local SR: (\S+) on .*, uuid ([0-9a-f-]{36})")
_SR_COMMAND = re.compile(r"local SR: (pvcreate|vgcreate|vgextend|lvcreate|mkfs\.ext4) ")
_MARKER = re.compile(r"netinstall-lab-marker: (.*)")  # the lab's scripts (lab/scenario.py)
# The lab's dd of the target disk before the install (lab/floor.py), dd's own summary line.
DISK_RATE = re.compile(r"netinstall-lab-disk-rate: (\d+) bytes .*copied, ([0-9.]+) s")
TIMED_LOG = "serial-timed.log"  # beside serial.log: each line after the lab's seconds
TIMED_FORMAT = "{:8.1f} {}\n"
_SECRET = re.compile(r"(token=)[^\s&]+")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")


def step_milestone(name: str) -> str:
    return f"step {name}"


@dataclass
class Tracker:
    """The milestones reached so far, in order, with the seconds since the start."""

    reached: dict[str, float] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    markers: list[str] = field(default_factory=list)  # the lab scripts' marker lines
    # After a power cut during an install (lab/powercut.py): the disk holds a half-installed
    # system, so booting it (a dom0 command line with root=UUID) before a new ``installed``
    # is a failure.
    installing: bool = False
    # The install step in progress on the console, if any; during first boot, the last
    # command it ran to make the SR ("first boot: pvcreate").
    step: str | None = None
    downloaded: dict[str, int] = field(default_factory=dict)  # file -> percent reported
    _rebooted: bool = False  # a reboot after the installer came up
    _xen_after_reboot: bool = False

    def _reach(self, name: str, at: float) -> bool:
        if name in self.reached:
            return False
        self.reached[name] = at
        return True

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why

    def after_power_cut(self, label: str, at: float) -> Tracker:
        """The tracker to follow the machine with once its power came back after a cut.

        The milestones before the cut stay in the table, prefixed ``before the cut:``,
        with the cut itself (``label``). A cut after ``installed`` keeps ``installed`` and
        the reboot as they were (the disk boots next and must reach ``running`` from
        there); a cut before it leaves a half-installed disk, which must not boot
        (``installing``).
        """
        installed = INSTALLED in self.reached
        keep = (INSTALLED, REBOOT) if installed else ()
        after = Tracker(installing=not installed, markers=list(self.markers))
        for name, when in self.reached.items():
            after.reached[name if name in keep else f"before the cut: {name}"] = when
        after.reached[label] = at
        after._rebooted = installed and REBOOT in self.reached
        return after

    def line(self, text: str, at: float) -> None:
        """One console line seen ``at`` seconds after the start."""
        text = clean(text)
        if _XEN.search(text):
            if self._rebooted:
                self._xen_after_reboot = True
                if INSTALLED in self.reached:  # else: the network again, not the disk
                    self._reach(XEN_DISK, at)
            else:
                self._reach(XEN_NETWORK, at)
        if _INIT.search(text):
            if self._rebooted and self._xen_after_reboot:
                self._fail("after the reboot the machine booted the installer again")
            self._reach(INSTALLER_UP, at)
        if match := _STEP.search(text):
            self._reach(step_milestone(match.group(1)), at)
            self.step = match.group(1)
        if (match := _STEP_END.search(text)) and match.group(1) == self.step:
            self.step = None
        if match := _MARKER.search(text):
            self.markers.append(f"netinstall-lab-marker: {match.group(1)}")
        if match := DISK_RATE.search(text):
            self.facts.setdefault("disk_rate_bytes", match.group(1))
            self.facts.setdefault("disk_rate_seconds", match.group(2))
        if match := _EXIT.search(text):
            self.facts.setdefault("installer_exit", match.group(1))
        if _REBOOT.search(text) and INSTALLER_UP in self.reached and not self._rebooted:
            self._rebooted = True
            self._reach(REBOOT, at)
        if (
            self.installing
            and INSTALLED not in self.reached
            and (match := _CMDLINE.search(text))
            and _ROOT_UUID.search(match.group(1) or match.group(2) or "")
        ):
            self._fail("the machine booted its half-installed disk before a new `installed`")
        if (match := _CMDLINE.search(text)) and XEN_DISK in self.reached:
            cmdline = match.group(1) or match.group(2) or ""
            if root := _ROOT_UUID.search(cmdline):
                self.facts.setdefault("cmdline_root_uuid", root.group(1).lower())
                self._reach(DOM0_DISK, at)
        if _SAN_LOGIN.search(text) and XEN_DISK in self.reached:
            self._reach(SAN_LOGIN, at)
        if match := _SR.search(text):
            self.facts.setdefault("sr_type", match.group(1))
            self.facts.setdefault("sr_uuid", match.group(2))
            self._reach(SR_CREATED, at)
        if match := _SR_COMMAND.search(text):
            self._reach(SR_COMMAND, at)
            self.step = f"first boot: {match.group(1)}"

    def event(self, state: str, step: str | None, message: str | None, at: float) -> None:
        """One registry event (its state, step and message) seen ``at`` seconds in."""
        if state in ("signalled", "installing", "installed"):
            self._reach(NETWORK_BOOT, at)  # a later state implies the boot config was fetched
        if step == ANSWER_FILE_STEP:
            self._reach(ANSWER_FILE, at)
        elif state == INSTALLED and step == FIRST_BOOT_STEP:
            self._reach(FIRST_BOOT, at)
        elif state == INSTALLED and step == SR_CREATED_STEP:
            self._reach(SR_REPORTED, at)
        elif state == "installing" and step:
            self._reach(step_milestone(step), at)
        if (
            state == "installing"
            and step == "download"
            and (match := _PERCENT.match(message or ""))
        ):
            name, percent = match.group(1), int(match.group(2))
            self.downloaded[name] = max(self.downloaded.get(name, 0), percent)
        if state == INSTALLED:
            self._reach(INSTALLED, at)
        if state == RUNNING and INSTALLED in self.reached:  # not an agent's earlier check-in
            self._reach(RUNNING, at)
            if (message or "").startswith("first check-in"):
                self._reach(FIRST_CHECKIN, at)
        if state == FAILED:
            self._reach(FAILED, at)
            self._fail(f"the host reported failed: {message or '(no message)'}")


def redact(text: str) -> str:
    """``text`` with install tokens (the installer's kernel command line) hidden."""
    return _SECRET.sub(r"\1<redacted>", text)


def clean(text: str) -> str:
    """A console line without escape sequences and carriage returns."""
    return _ANSI.sub("", text).replace("\r", "").rstrip()


class SerialLog:
    """Follows the serial console file: ``read()`` returns the lines completed since.

    With ``timed`` and ``clock``, each line read is also appended to ``timed`` after the
    lab's seconds when it was read (``TIMED_FORMAT``): the console's own timestamps are
    each kernel's or none (firmware, GRUB, Xen), so a reboot's gaps show only here. The
    lab reads every ``Follower.interval`` (0.5 s), its resolution.
    """

    def __init__(
        self,
        path: Path,
        keep: int = 40,
        timed: Path | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.tail: deque[str] = deque(maxlen=keep)
        self.timed = timed if clock is not None else None
        self.clock = clock

    def read(self) -> list[str]:
        try:
            with self.path.open("rb") as stream:
                stream.seek(self._offset)
                data = stream.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        lines = [clean(raw.decode("utf-8", "replace")) for raw in complete]
        self.tail.extend(lines)
        if lines and self.timed is not None and self.clock is not None:
            at = self.clock()
            with self.timed.open("a", encoding="utf-8") as stream:
                stream.writelines(TIMED_FORMAT.format(at, redact(line)) for line in lines)
        return lines

    def last_lines(self) -> list[str]:
        """The last lines seen, the unfinished one included, tokens redacted."""
        partial = clean(self._partial.decode("utf-8", "replace"))
        return [redact(line) for line in [*self.tail, *([partial] if partial else [])]]


def phase_table(reached: dict[str, float]) -> str:
    """Milestone, seconds since the start, since the previous milestone and until the next.

    A step's own duration is its "until next" (``step extract-root`` lasts until
    ``step install-boot-files`` begins); "since previous" is what led up to a milestone
    (``installer up``: from Xen's banner to the installer's first line).
    """
    ordered = sorted(reached.items(), key=lambda item: item[1])
    rows = [("milestone", "at (s)", "since previous (s)", "until next (s)")]
    previous = 0.0
    for index, (name, at) in enumerate(ordered):
        following = ordered[index + 1][1] - at if index + 1 < len(ordered) else None
        until = "-" if following is None else f"{following:.1f}"
        rows.append((name, f"{at:.1f}", f"{at - previous:.1f}", until))
        previous = at
    width = max(len(row[0]) for row in rows)
    return "\n".join(f"{a:<{width}}  {b:>8}  {c:>18}  {d:>14}" for a, b, c, d in rows)
