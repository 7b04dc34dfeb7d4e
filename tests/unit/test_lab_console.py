"""Milestones of a lab run from console lines and registry events (netinstall.lab.console)."""

from __future__ import annotations

from pathlib import Path

from netinstall.lab import console
from netinstall.lab.console import Tracker

XEN = "(XEN) Xen version 4.17.6-pre (Debian 4.17.5+72-g01b2c8e2b8-1) (gcc) debug=n"
UUID = "0b8cbd2c-6d5e-4f34-9a43-5d8a1b2c3d4e"
SR = "5f1f6c1e-8d0b-4b6a-9d7e-2b1f0e4c3a21"


def _full_run() -> Tracker:
    tracker = Tracker()
    tracker.event("signalled", None, "fetched its boot configuration", 5.0)
    tracker.line(f"\x1b[2J{XEN}\r", 20.0)
    tracker.line("netinstall-init: starting (kernel 6.12, console hvc0)", 40.0)
    tracker.line("netinstall: step network (1/9)", 41.0)
    tracker.event("installing", "network", None, 41.5)
    tracker.event("installing", "partition", None, 60.0)
    tracker.event("installed", None, None, 200.0)
    tracker.line("netinstall-init: reboot", 201.0)
    tracker.line(XEN, 215.0)
    tracker.line(f"[    0.000000] Command line: root=UUID={UUID.upper()} ro console=hvc0", 216.0)
    tracker.line(f"netinstall-firstboot: local SR: lvm on ['/dev/vda3'], uuid {SR}", 250.0)
    tracker.event("running", None, None, 251.0)
    return tracker


def test_a_full_run_reaches_every_milestone_in_order() -> None:
    tracker = _full_run()
    assert list(tracker.reached) == [
        console.NETWORK_BOOT,
        console.XEN_NETWORK,
        console.INSTALLER_UP,
        "step network",
        "step partition",
        console.INSTALLED,
        console.REBOOT,
        console.XEN_DISK,
        console.DOM0_DISK,
        console.SR_CREATED,
        console.RUNNING,
    ]
    assert tracker.reached[console.INSTALLER_UP] == 40.0
    assert tracker.reached["step network"] == 41.0  # the console line came first
    assert tracker.facts == {"cmdline_root_uuid": UUID, "sr_type": "lvm", "sr_uuid": SR}
    assert tracker.failure is None


def test_the_milestones_the_server_hears_are_milestones_too() -> None:
    tracker = Tracker()
    tracker.event("signalled", None, "fetched its boot configuration", 5.0)
    tracker.event("signalled", "answer-file", "answer file fetched", 30.0)
    tracker.event("installing", "network", None, 31.0)
    tracker.event("installed", None, None, 200.0)
    tracker.event("installed", "first-boot", "first boot started", 240.0)
    tracker.line(f"netinstall-firstboot: local SR: lvm on ['/dev/vda3'], uuid {SR}", 250.0)
    tracker.event("installed", "sr-created", f"local SR lvm {SR} is ready", 250.5)
    tracker.event("running", None, None, 260.0)
    assert list(tracker.reached) == [
        console.NETWORK_BOOT,
        console.ANSWER_FILE,
        "step network",
        console.INSTALLED,
        console.FIRST_BOOT,
        console.SR_CREATED,
        console.SR_REPORTED,
        console.RUNNING,
    ]
    assert "step answer-file" not in tracker.reached


def test_a_failed_event_is_a_failure_with_its_message() -> None:
    tracker = Tracker()
    tracker.event("failed", "partition", "disk vda is too small", 80.0)
    assert tracker.failure == "the host reported failed: disk vda is too small"
    assert console.FAILED in tracker.reached


def test_booting_the_installer_again_after_a_reboot_is_a_failure() -> None:
    tracker = Tracker()
    tracker.line(XEN, 20.0)
    tracker.line("netinstall-init: starting", 40.0)
    tracker.line("installer_core: the install steps arrive with the installer issue", 41.0)
    tracker.line("netinstall-init: the installer exited with status 3", 41.5)
    tracker.line("netinstall-init: reboot", 42.0)
    tracker.line(XEN, 60.0)  # netbooted again: not the disk (no installed event)
    assert console.XEN_DISK not in tracker.reached
    tracker.line("netinstall-init: starting", 80.0)
    assert tracker.failure == "after the reboot the machine booted the installer again"
    assert tracker.facts["installer_exit"] == "3"


def test_a_reboot_before_the_installer_is_not_the_reboot_milestone() -> None:
    tracker = Tracker()
    tracker.line("reboot: Restarting system", 3.0)
    assert console.REBOOT not in tracker.reached


def test_the_phase_table_lists_milestones_by_time() -> None:
    table = console.phase_table({"b": 30.0, "a": 10.5, "c": 31.0}).splitlines()
    assert table[0].split() == ["milestone", "at", "(s)", "since", "previous", "(s)", "until",
                                "next", "(s)"]  # fmt: skip
    assert table[1].split() == ["a", "10.5", "10.5", "19.5"]
    assert table[2].split() == ["b", "30.0", "19.5", "1.0"]  # b lasted 1.0 s, until c
    assert table[3].split() == ["c", "31.0", "1.0", "-"]


def test_the_lab_disk_rate_and_the_agents_first_check_in() -> None:
    tracker = _full_run()
    tracker.line(
        "  INFO installer_core.scripts: netinstall-lab-disk-rate: 134217728 bytes (134 MB, "
        "128 MiB) copied, 0.512 s, 262 MB/s",
        45.0,
    )
    assert (tracker.facts["disk_rate_bytes"], tracker.facts["disk_rate_seconds"]) == (
        "134217728",
        "0.512",
    )
    tracker.event("running", None, "checked in: running 0.1.0", 252.0)
    assert console.FIRST_CHECKIN not in tracker.reached  # not the first one
    tracker.event("running", None, "first check-in: running 0.1.0", 256.0)
    assert tracker.reached[console.FIRST_CHECKIN] == 256.0
    assert tracker.reached[console.RUNNING] == 251.0


def test_a_check_in_before_the_install_is_not_the_first_check_in() -> None:
    tracker = Tracker()
    tracker.event("running", None, "first check-in: running 0.1.0", 10.0)
    assert console.FIRST_CHECKIN not in tracker.reached


def test_serial_log_returns_complete_lines_and_keeps_a_tail(tmp_path: Path) -> None:
    path = tmp_path / "serial.log"
    serial = console.SerialLog(path, keep=2)
    assert serial.read() == []  # no file yet
    path.write_bytes(b"one\r\ntw")
    assert serial.read() == ["one"]
    with path.open("ab") as stream:
        stream.write(b"o\nthree\nfou")
    assert serial.read() == ["two", "three"]
    assert serial.last_lines() == ["two", "three", "fou"]


def test_serial_log_writes_each_line_after_the_time_it_was_read(tmp_path: Path) -> None:
    path, timed = tmp_path / "serial.log", tmp_path / console.TIMED_LOG
    times = iter([1.25, 7.5])
    serial = console.SerialLog(path, timed=timed, clock=lambda: next(times))
    path.write_bytes(b"(XEN) Xen version 4.17\nnetinstall.token=abc\npart")
    serial.read()
    assert serial.read() == []  # nothing new: no time taken, nothing written
    with path.open("ab") as stream:
        stream.write(b"ial\n")
    serial.read()
    assert timed.read_text() == (
        "     1.2 (XEN) Xen version 4.17\n     1.2 netinstall.token=<redacted>\n     7.5 partial\n"
    )


def test_the_console_tail_hides_install_tokens(tmp_path: Path) -> None:
    path = tmp_path / "serial.log"
    path.write_bytes(b"Command line: answerfile=http://s/a?token=abc123 netinstall.token=abc123\n")
    serial = console.SerialLog(path)
    serial.read()
    assert serial.last_lines() == [
        "Command line: answerfile=http://s/a?token=<redacted> netinstall.token=<redacted>"
    ]


def test_running_counts_only_after_installed() -> None:
    """An agent's check-in (state running) before the phase's install is not its end."""
    tracker = console.Tracker()
    tracker.event("running", None, "first check-in: running 0.1.0", 1.0)
    assert console.RUNNING not in tracker.reached
    assert console.NETWORK_BOOT not in tracker.reached
    tracker.event("signalled", None, None, 2.0)
    tracker.event("installed", None, None, 3.0)
    tracker.event("running", None, None, 4.0)
    assert tracker.reached[console.RUNNING] == 4.0
