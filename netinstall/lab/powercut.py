"""Power cuts during an install: the plug pulled at one install step, then power on again.

A scenario with ``cut`` set (``scenario.Scenario.cut``, a name of ``CUT_POINTS``) runs as
usual until its cut point, seen on the serial console and in the host's registry events
(the current install step, the download's progress), then:

1. the QEMU process is killed (SIGKILL: no shutdown, no flush of the guest's caches,
   as a pulled plug); the lab notes how much of the disk image was written by then and
   which install step the console shows in progress, which must be the cut point's;
2. the same machine is powered on again: the same QEMU command line, disk and firmware
   variable store, whose boot order is the firmware's own (network first, then the
   disk, ``lab/qemu.py``). Nothing else is touched: no registry change, no rearm;
3. the lab follows it with a tracker that fails the run if the machine boots its
   half-installed disk before a new ``installed`` (``console.Tracker.installing``):
   while its netboot is armed the server hands it the installer again, and once it is
   installed (netboot disarmed) it boots its disk and finishes its first boot;
4. the run then ends as every full run does (``demo.verify``): ``running`` after the
   reboot, with facts that match the disk. ``after_the_cut`` adds what the cut must
   have left true.

The figure each cut reports is the seconds from the cut to ``running``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from netinstall.lab import console
from netinstall.lab.console import Tracker
from netinstall.lab.follow import Follower

CUT_TIMEOUT = 1800.0  # seconds from power on until the cut point, at most
FOLLOW_INTERVAL = 0.1  # seconds between looks while waiting for the cut point
BEFORE_CUT_LOG = "serial-before-cut.log"  # the console until the cut (work directory)
# The download cut: once the root archive (the biggest file) has passed this share.
DOWNLOAD_PERCENT = 20


@dataclass(frozen=True)
class CutPoint:
    """Where the power goes: during ``step`` (its start seen), ``delay`` seconds later."""

    name: str
    title: str
    step: str | None  # the install step; None: after installed, during first boot
    during: tuple[str, ...]  # the steps the console may show in progress at the cut
    delay: float = 0.0
    untouched: bool = False  # the disk must not have been written at the cut
    download: bool = False  # wait until the root archive is part-way down

    def reached(self, tracker: Tracker, archive: str) -> bool:
        """Is it time to cut? (pure)"""
        if self.step is None:  # first boot, once it runs its first command to make the SR
            return console.INSTALLED in tracker.reached and console.SR_COMMAND in tracker.reached
        if console.step_milestone(self.step) not in tracker.reached:
            return False
        return not self.download or tracker.downloaded.get(archive, 0) >= DOWNLOAD_PERCENT


CUT_POINTS: dict[str, CutPoint] = {
    cut.name: cut
    for cut in (
        CutPoint(
            "before-partition",
            "before partition",
            "plan",
            during=("plan", "installation-start-scripts", "download"),
            untouched=True,
        ),
        CutPoint(
            "download", "during the payload download", "download", ("download",), download=True
        ),
        CutPoint("extract", "during extract", "extract-root", ("extract-root",), delay=5.0),
        CutPoint("bootloader", "during boot-loader install", "bootloader", ("bootloader",), 1.0),
        CutPoint("first-boot", "after installed, during first boot", None, ()),
    )
}


def cut_point(name: str) -> CutPoint:
    if name not in CUT_POINTS:
        raise InputError(f"unknown cut point {name!r}; expected {', '.join(CUT_POINTS)}")
    return CUT_POINTS[name]


@dataclass(frozen=True)
class Cut:
    """What the cut found: when (seconds since the start), in which step, the disk's
    bytes written by then, and the SR uuid first boot had chosen (first-boot cut)."""

    point: CutPoint
    at: float
    step: str | None
    written: int
    sr_uuid: str | None = None

    @property
    def label(self) -> str:
        return f"power cut {self.point.title}"


def cut_and_power_on(
    follower: Follower,
    tracker: Tracker,
    point: CutPoint,
    *,
    disk: Path,
    archive: str,
    workdir: Path,
) -> tuple[Tracker, Cut | None, str | None]:
    """Follow until ``point``, pull the plug, check where it fell, power on again.

    Returns the tracker to follow the powered-on machine with, the cut, and why the run
    cannot go on (None when it can). ``follower.vm`` is the new QEMU afterwards.
    """
    follower.interval = FOLLOW_INTERVAL
    try:
        reason = follower.follow(
            tracker, console.RUNNING, CUT_TIMEOUT, stop=lambda t: point.reached(t, archive)
        )
    finally:
        follower.interval = Follower.interval
    if reason is None and console.RUNNING in tracker.reached:
        reason = f"the host reached running before the cut point {point.title!r}"
    if reason is not None:
        return tracker, None, reason
    if point.delay:
        time.sleep(point.delay)
    vm = follower.vm
    vm.proc.kill()  # the plug: no shutdown of any kind
    vm.proc.wait()
    at = follower.now()
    written = disk.stat().st_blocks * 512
    for text in follower.serial.read():  # what the console said up to the cut
        tracker.line(text, at)
    cut = Cut(point, at, tracker.step, written, tracker.facts.get("sr_uuid"))
    follower.say(
        f"[{at:7.1f} s] {cut.label}: step {cut.step or '-'} in progress, "
        f"{written / 2**20:.0f} MiB of the disk written"
    )
    if (why := _where_it_fell(tracker, cut)) is not None:
        return tracker, cut, why
    serial = follower.serial.path
    serial.replace(workdir / BEFORE_CUT_LOG)  # QEMU starts the console file afresh
    follower.power_on(workdir / "qemu-after-cut.log")
    follower.serial = console.SerialLog(
        serial, timed=serial.with_name(console.TIMED_LOG), clock=follower.now
    )
    return tracker.after_power_cut(cut.label, at), cut, None


def _where_it_fell(tracker: Tracker, cut: Cut) -> str | None:
    """The cut came where it was meant to (or the run says where it came instead)."""
    point = cut.point
    if point.step is None:
        if console.RUNNING in tracker.reached:
            return "the running report was made before the cut: first boot was over"
        if not (cut.step or "").startswith("first boot: "):
            return "the cut meant during first boot came before it made its SR"
        return None
    if console.INSTALLED in tracker.reached:
        return f"the cut meant {point.title} came after installed"
    if cut.step not in point.during:
        return f"the cut meant {point.title} came during step {cut.step or '(none)'}"
    if point.untouched and (cut.written or console.step_milestone("partition") in tracker.reached):
        return f"the cut meant {point.title} came after the disk was written ({cut.written} B)"
    return None


def after_the_cut(tracker: Tracker, cut: Cut, checks: list[str]) -> str | None:
    """Once ``running`` arrived after the power came back: what the cut must have left."""
    reached = tracker.reached
    if console.RUNNING not in reached:
        return f"no running after the {cut.label}"
    if cut.point.step is not None:  # a half-installed disk: the installer again, first
        for needed in (console.XEN_NETWORK, console.INSTALLER_UP, console.INSTALLED):
            if needed not in reached or reached[needed] < cut.at:
                return f"after the {cut.label} the machine did not reach {needed!r} again"
        checks.append(
            f"after the {cut.label} (step {cut.step}, {cut.written / 2**20:.0f} MiB written) "
            "the machine booted the installer from the network, never its half-installed "
            "disk, and installed again"
        )
    else:
        if console.INSTALLER_UP in reached and reached[console.INSTALLER_UP] > cut.at:
            return f"after the {cut.label} the machine ran the installer again"
        found = tracker.facts.get("sr_uuid")
        if cut.sr_uuid is None or found != cut.sr_uuid:
            return f"first boot chose SR {cut.sr_uuid} before the cut and {found} after it"
        checks.append(
            f"after the {cut.label} the machine booted its disk again and first boot "
            f"finished with the SR it had begun ({found})"
        )
    seconds = reached[console.RUNNING] - cut.at
    checks.append(f"power cut {cut.point.name}: running {seconds:.1f} s after the cut")
    return None
