"""Power cuts in the lab (netinstall.lab.powercut, console.Tracker after a cut): when a cut
point is reached, where a cut fell, and what the run must show once the power came back."""

from __future__ import annotations

import pytest

from common.errors import InputError
from netinstall.lab import console, powercut
from netinstall.lab.console import Tracker
from netinstall.lab.powercut import CUT_POINTS, Cut

XEN = "(XEN) Xen version 4.17.7 (Debian 4.17.7) debug=n"
ARCHIVE = "dom0-rootfs.tar.zst"
ROOT = "0b8cbd2c-6d5e-4f34-9a43-5d8a1b2c3d4e"
SR = "5f1f6c1e-8d0b-4b6a-9d7e-2b1f0e4c3a21"


def _installer_until(step: str) -> Tracker:
    tracker = Tracker()
    tracker.line(XEN, 10.0)
    tracker.line("netinstall-init: starting", 20.0)
    tracker.line(f"netinstall: step {step} (7/18)", 30.0)
    tracker.event("installing", step, None, 30.5)
    return tracker


def test_every_cut_point_of_the_issue_is_there() -> None:
    wanted = ["before-partition", "download", "extract", "bootloader", "first-boot"]
    assert list(CUT_POINTS) == wanted
    assert powercut.cut_point("extract").step == "extract-root"
    with pytest.raises(InputError, match="unknown cut point 'partition'"):
        powercut.cut_point("partition")


def test_a_step_cut_point_is_reached_when_its_step_begins() -> None:
    extract = CUT_POINTS["extract"]
    tracker = _installer_until("mount-target")
    assert not extract.reached(tracker, ARCHIVE)
    tracker.line("netinstall: step extract-root (10/18)", 40.0)
    assert extract.reached(tracker, ARCHIVE)
    assert tracker.step == "extract-root"
    tracker.line("netinstall: step extract-root done in 21.1s", 61.0)
    assert tracker.step is None


def test_the_download_cut_waits_for_the_root_archive_part_way() -> None:
    download = CUT_POINTS["download"]
    tracker = _installer_until("download")
    tracker.event("installing", "download", "boot/xen.gz 100%", 31.0)
    assert not download.reached(tracker, ARCHIVE)  # another file: not mid-archive
    tracker.event("installing", "download", f"{ARCHIVE} 10%", 32.0)
    assert not download.reached(tracker, ARCHIVE)
    tracker.event("installing", "download", f"{ARCHIVE} 20%", 33.0)
    assert download.reached(tracker, ARCHIVE)
    assert tracker.downloaded == {"boot/xen.gz": 100, ARCHIVE: 20}


def test_the_first_boot_cut_waits_for_the_installed_system_at_work() -> None:
    first_boot = CUT_POINTS["first-boot"]
    tracker = Tracker()
    tracker.line("netinstall_dom0.sr: local SR: pvcreate --yes /dev/vda3", 5.0)
    assert not first_boot.reached(tracker, ARCHIVE)  # not installed: an old disk's line
    tracker = _installed_and_first_boot()
    assert first_boot.reached(tracker, ARCHIVE)
    assert tracker.step == "first boot: pvcreate"
    before = _installer_until("bootloader")
    before.event("installed", None, None, 100.0)
    before.line(f"netinstall-firstboot: local SR: lvm on ['/dev/vda3'], uuid {SR}", 150.0)
    assert not first_boot.reached(before, ARCHIVE)  # the SR named, nothing made yet


def _installed_and_first_boot() -> Tracker:
    tracker = _installer_until("bootloader")
    tracker.event("installed", None, None, 100.0)
    tracker.line("netinstall-init: reboot", 101.0)
    tracker.line(XEN, 110.0)
    tracker.line(f"[    0.000000] Command line: root=UUID={ROOT} ro console=hvc0", 111.0)
    tracker.line(f"netinstall-firstboot: local SR: lvm on ['/dev/vda3'], uuid {SR}", 150.0)
    tracker.line("netinstall_dom0.sr: local SR: pvcreate --yes /dev/vda3", 151.0)
    return tracker


@pytest.mark.parametrize(
    ("name", "step", "written", "why"),
    [
        ("extract", "extract-root", 2**30, None),
        ("extract", "install-boot-files", 2**30, "came during step install-boot-files"),
        ("bootloader", None, 2**30, "came during step (none)"),
        ("before-partition", "download", 0, None),
        ("before-partition", "download", 4096, "after the disk was written (4096 B)"),
        ("first-boot", "first boot: vgcreate", 2**30, None),
        ("first-boot", None, 2**30, "came before it made its SR"),
    ],
)
def test_a_cut_must_fall_where_it_was_meant(
    name: str, step: str | None, written: int, why: str | None
) -> None:
    tracker = _installed_and_first_boot() if name == "first-boot" else _installer_until("x")
    tracker.step = step
    found = powercut._where_it_fell(tracker, Cut(CUT_POINTS[name], 50.0, step, written))
    assert found == why or (why is not None and found is not None and why in found)


def test_a_cut_before_installed_may_not_boot_the_half_installed_disk() -> None:
    before = _installer_until("extract-root")
    after = before.after_power_cut("power cut during extract", 50.0)
    assert after.installing
    assert after.reached["before the cut: step extract-root"] == 30.0
    assert after.reached["power cut during extract"] == 50.0
    after.line(XEN, 60.0)  # the firmware booted its disk: no installer, a dom0
    after.line(f"[    0.000000] Command line: root=UUID={ROOT} ro console=hvc0", 61.0)
    assert after.failure is not None
    assert "half-installed disk" in after.failure


def test_after_a_cut_before_installed_the_installer_runs_again_to_running() -> None:
    cut = Cut(CUT_POINTS["extract"], 50.0, "extract-root", 2**30)
    after = _installer_until("extract-root").after_power_cut(cut.label, cut.at)
    after.line(XEN, 60.0)
    after.line("netinstall-init: starting", 70.0)
    after.event("installed", None, None, 200.0)
    after.line("netinstall-init: reboot", 201.0)
    after.line(XEN, 210.0)
    after.line(f"[    0.000000] Command line: root=UUID={ROOT} ro console=hvc0", 211.0)
    after.event("running", None, None, 260.0)
    assert after.failure is None
    assert after.reached[console.XEN_DISK] == 210.0
    checks: list[str] = []
    assert powercut.after_the_cut(after, cut, checks) is None
    assert checks[-1] == "power cut extract: running 210.0 s after the cut"


def test_without_the_installer_again_a_cut_before_installed_fails() -> None:
    cut = Cut(CUT_POINTS["bootloader"], 50.0, "bootloader", 2**30)
    after = _installer_until("bootloader").after_power_cut(cut.label, cut.at)
    after.event("installed", None, None, 60.0)  # no installer seen since the cut
    after.event("running", None, None, 100.0)
    why = powercut.after_the_cut(after, cut, [])
    assert why is not None
    assert "did not reach 'Xen from the network' again" in why


def test_after_a_first_boot_cut_the_disk_boots_and_keeps_its_sr() -> None:
    before = _installed_and_first_boot()
    cut = Cut(CUT_POINTS["first-boot"], 151.0, before.step, 2**31, before.facts["sr_uuid"])
    after = before.after_power_cut(cut.label, cut.at)
    assert not after.installing
    assert after.reached[console.INSTALLED] == 100.0  # kept: the disk is whole
    after.line(XEN, 160.0)
    after.line(f"[    0.000000] Command line: root=UUID={ROOT} ro console=hvc0", 161.0)
    after.line(f"netinstall-firstboot: local SR: lvm on ['/dev/vda3'], uuid {SR}", 190.0)
    after.event("running", None, None, 200.0)
    assert after.reached[console.XEN_DISK] == 160.0
    checks: list[str] = []
    assert powercut.after_the_cut(after, cut, checks) is None
    assert checks[-1] == "power cut first-boot: running 49.0 s after the cut"


def test_a_first_boot_cut_that_changes_the_sr_fails() -> None:
    before = _installed_and_first_boot()
    cut = Cut(CUT_POINTS["first-boot"], 151.0, None, 2**31, SR)
    after = before.after_power_cut(cut.label, cut.at)
    other = "11111111-2222-3333-4444-555555555555"
    after.line(f"netinstall-firstboot: local SR: lvm on ['/dev/vda3'], uuid {other}", 190.0)
    after.event("running", None, None, 200.0)
    why = powercut.after_the_cut(after, cut, [])
    assert why == f"first boot chose SR {SR} before the cut and {other} after it"


def test_the_installer_after_a_first_boot_cut_is_a_failure() -> None:
    after = _installed_and_first_boot().after_power_cut("power cut", 151.0)
    after.line(XEN, 160.0)
    after.line("netinstall-init: starting", 170.0)
    assert after.failure == "after the reboot the machine booted the installer again"


def test_the_scenarios_name_every_cut_point() -> None:
    from netinstall.lab import scenario

    assert tuple(CUT_POINTS) == scenario.CUT_NAMES
    bios = scenario.scenario_for("bios", "power-cut-bootloader")
    assert (bios.cut, bios.dos, bios.disk_size) == ("bootloader", True, scenario.SMALL_DISK)
    uefi = scenario.scenario_for("uefi", "power-cut-bootloader")
    assert (uefi.cut, uefi.dos, uefi.disk_size) == ("bootloader", False, None)
    assert scenario.scenario_for("bios", "dos").dos
    with pytest.raises(InputError, match="BIOS machines only"):
        scenario.scenario_for("uefi", "dos")
