"""The install's floor (netinstall.lab.floor): its parts, the ratio, the dd script."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import cast

import pytest

from netinstall.lab import console, floor, services
from netinstall.lab.follow import Follower
from netinstall.lab.scenario import SCENARIOS
from tests.unit.test_lab_follow import FakeChild

RATE_FACTS = {"disk_rate_bytes": "134217728", "disk_rate_seconds": "0.5"}


def _reached() -> dict[str, float]:
    return {
        console.INSTALLER_UP: 30.0,
        console.RUNNING: 200.0,
        floor.FLOOR_RESET: 210.0,
        floor.FLOOR_XEN: 220.0,
        floor.FLOOR_CHECKIN: 280.0,
    }


def test_the_floor_adds_installer_up_the_payload_at_dd_rate_and_a_plain_boot() -> None:
    measured = floor.measure(_reached(), RATE_FACTS, payload=268_435_456)
    assert measured is not None
    assert measured.rate == 268_435_456.0  # 128 MiB in 0.5 s
    assert measured.write == 1.0
    assert measured.boot == 60.0  # Xen from disk to the check-in, not from the reset
    assert measured.total == 91.0
    lines = floor.floor_lines(measured, _reached())
    assert lines[0].endswith("= 91.0 s")
    assert lines[1] == "power-on to running 200.0 s = 2.20x the floor"


def test_a_floor_with_a_part_missing_is_not_measured() -> None:
    reached = _reached()
    del reached[floor.FLOOR_CHECKIN]
    assert floor.measure(reached, RATE_FACTS, payload=1) is None
    assert floor.measure(_reached(), {}, payload=1) is None
    assert floor.measure(_reached(), {**RATE_FACTS, "disk_rate_seconds": "0"}, payload=1) is None
    assert floor.floor_lines(None, _reached()) == [
        "floor: not measured (needs the disk rate and the floor boot)"
    ]


def test_the_rate_script_writes_the_disk_directly_and_prints_dds_summary() -> None:
    script = floor.rate_script("/dev/vda")
    assert script.startswith("#!/bin/sh\n")
    assert "of=/dev/vda bs=4194304 count=32 seek=256 " in script
    assert "oflag=direct conv=fdatasync,notrunc" in script
    summary = "134217728 bytes (134 MB, 128 MiB) copied, 0.5 s, 268 MB/s"
    tracker = console.Tracker()
    tracker.line(f"start script 1 stdout: netinstall-lab-disk-rate: {summary}", 50.0)
    assert tracker.facts == RATE_FACTS


def test_payload_bytes_are_every_checksummed_file(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    files = {"boot/xen.gz": 3, "boot/vmlinuz": 5, "boot/initrd.img": 7, "root.tar.zst": 11}
    for name, size in files.items():
        (tmp_path / name).write_bytes(b"x" * size)
    sums = "\n".join(f"{name} = sha256:{'0' * 64}" for name in files)
    (tmp_path / ".treeinfo").write_text(
        "[general]\nproduct = netinstall\nversion = 0.1.0\nbuild = b\narch = x86_64\n"
        "[images-xen]\nkernel = boot/vmlinuz\ninitrd = boot/initrd.img\nxen = boot/xen.gz\n"
        "[rootfs]\narchive = root.tar.zst\ncompression = zstd\n"
        f"[checksums]\n{sums}\n"
    )
    assert floor.payload_bytes(tmp_path) == 26


def test_a_floor_scenario_runs_the_rate_script_first() -> None:
    server = ipaddress.IPv4Interface("192.168.77.1/24")
    plain = SCENARIOS["uefi"]
    assert "disk_rate" not in plain.variables(server)
    measured = type(plain)(**{**plain.__dict__, "floor": True})
    assert measured.variables(server)["disk_rate"] == floor.RATE_SCRIPT


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_quiesce_sends_sync_then_remount_and_waits_for_the_console() -> None:
    sent: list[str] = []
    console_lines = [[], ["sysrq: Emergency Sync"], ["Emergency Remount complete"]]
    clock = _Clock()
    done = floor.quiesce(sent.append, lambda: console_lines.pop(0), clock=clock, sleep=clock.sleep)
    assert done
    assert sent == ["sendkey alt-sysrq-s", "sendkey alt-sysrq-u"]
    assert clock.now == 1.0  # two looks at the console before the third found it


def test_quiesce_gives_up_after_its_timeout() -> None:
    clock = _Clock()
    done = floor.quiesce(lambda command: None, lambda: [], clock=clock, sleep=clock.sleep)
    assert not done
    assert floor.QUIESCE_TIMEOUT <= clock.now < floor.QUIESCE_TIMEOUT + 1


def test_a_power_cycle_starts_a_new_process_and_keeps_the_console_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old QEMU quits, its console is kept, a fresh one follows the same file."""
    monkeypatch.setattr(services, "Child", FakeChild)
    monkeypatch.setattr(services, "quit_qemu", lambda vm, monitor: setattr(vm, "quit", True))
    serial = tmp_path / "serial.log"
    serial.write_text("before the power cycle\n")
    argv = ["qemu-system-x86_64", "-m", "3072", "-chardev", f"file,id=con0,path={serial}"]
    old = FakeChild("qemu", argv, tmp_path / "qemu.log")
    server = FakeChild("server", ["netinstall"], tmp_path / "server.log")
    follower = Follower(
        cast(services.Child, old), cast(services.Child, server), tmp_path,
        "52:54:00:77:00:01", 0.0, lambda text: None,
    )  # fmt: skip
    timed = tmp_path / console.TIMED_LOG
    follower.serial = console.SerialLog(serial, timed=timed, clock=lambda: 5.0)
    follower.serial.read()
    floor.power_cycle(follower, tmp_path / "monitor.sock")
    assert old.quit  # type: ignore[attr-defined]
    new = cast(FakeChild, follower.vm)
    assert new is not old
    assert new.argv == argv  # the same machine
    assert new.log_path == tmp_path / "qemu-floor.log"
    assert not new.append
    assert (tmp_path / floor.BEFORE_FLOOR_LOG).read_text() == "before the power cycle\n"
    serial.write_text("(XEN) Xen version 4.17.7\n")  # the new QEMU's console, from its start
    assert follower.serial.read() == ["(XEN) Xen version 4.17.7"]
    assert timed.read_text().splitlines() == [
        "     5.0 before the power cycle",
        "     5.0 (XEN) Xen version 4.17.7",
    ]
