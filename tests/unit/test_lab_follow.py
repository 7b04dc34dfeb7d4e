"""netinstall.lab.follow: a guest reboot is a power cycle; any other end of QEMU is a failure."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, cast

import pytest

from netinstall.lab import console, follow, services
from netinstall.lab.follow import Follower


class FakeChild:
    """A process as ``services.Child`` stands for one, without a process: its exit status on
    demand (the floor's tests use it too)."""

    started: ClassVar[list[FakeChild]] = []

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        append: bool = False,
        before: object = None,
    ) -> None:
        self.argv, self.log_path, self.append = argv, log_path, append
        self.before = before
        self.status: int | None = None
        FakeChild.started.append(self)

    def exited(self) -> int | None:
        return self.status

    def output(self) -> str:
        return "qemu-system-x86_64: terminating on signal 15"


def _follower(tmp_path: Path, argv: list[str]) -> tuple[Follower, Path]:
    serial = tmp_path / "serial.log"
    serial.write_text("")
    vm = FakeChild("qemu", [*argv, "-chardev", f"file,id=con0,path={serial},append=on"],
                  tmp_path / "qemu.log")  # fmt: skip
    server = FakeChild("server", ["netinstall"], tmp_path / "server.log")
    follower = Follower(
        cast(services.Child, vm), cast(services.Child, server), tmp_path,
        "52:54:00:77:00:01", 0.0, lambda text: None, interval=0.01,
    )  # fmt: skip
    return follower, serial


def test_a_guest_reboot_powers_the_machine_on_again_and_the_console_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "Child", FakeChild)
    FakeChild.started = []
    follower, serial = _follower(tmp_path, ["qemu-system-x86_64", "-action", "reboot=shutdown"])
    first = follower.vm
    cast(FakeChild, first).status = 0  # the guest reset the machine: QEMU ended
    with serial.open("a") as out:
        out.write("netinstall: step bootloader (14/18)\n")

    def rebooted(tracker: console.Tracker) -> bool:
        if follower.vm is not first:  # the new QEMU's console, appended to the same file
            with serial.open("a") as out:
                out.write("(XEN) Xen version 4.17.7 (Debian 4.17.7)\n")
        return console.XEN_NETWORK in tracker.reached

    tracker = console.Tracker()
    assert follower.follow(tracker, console.RUNNING, timeout=10, stop=rebooted) is None
    assert follower.vm is not first
    assert follower.power_ons == 1
    assert FakeChild.started[-1].argv == first.argv
    assert FakeChild.started[-1].log_path == first.log_path
    assert FakeChild.started[-1].append


def test_qemu_ending_otherwise_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No reboot action on the command line (the multipath machine), or a non-zero status."""
    monkeypatch.setattr(services, "Child", FakeChild)
    for argv, status in (
        (["qemu-system-x86_64"], 0),
        (["qemu-system-x86_64", "-action", "reboot=shutdown"], 1),
    ):
        follower, _ = _follower(tmp_path, argv)
        cast(FakeChild, follower.vm).status = status
        why = follower.follow(console.Tracker(), console.RUNNING, timeout=10)
        assert why is not None
        assert why.startswith(f"QEMU exited with status {status}")
        assert follower.power_ons == 0


def test_the_console_file_is_found_on_every_kind_of_command_line() -> None:
    for arg, path in (
        ("file:/lab/serial.log", "/lab/serial.log"),
        ("file,id=con0,path=/lab/serial.log,append=on", "/lab/serial.log"),
        ("socket,id=con0,path=/lab/con.sock,server=on,logfile=/lab/s.log,logappend=on",
         "/lab/s.log"),
    ):  # fmt: skip
        assert follow.vm_serial(["qemu-system-x86_64", "-chardev", arg]) == Path(path)


def test_revive_powers_on_after_a_reboot_and_names_any_other_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``revive`` is what scenarios that wait on the registry (not ``follow``) call while the
    machine reboots: the multipath scenario's reboot on one path."""
    monkeypatch.setattr(services, "Child", FakeChild)
    FakeChild.started = []
    follower, _ = _follower(tmp_path, ["qemu-system-x86_64", "-action", "reboot=shutdown"])
    first = follower.vm
    assert follower.revive() is None
    assert follower.vm is first
    cast(FakeChild, first).status = 0
    assert follower.revive() is None
    assert follower.vm is not first
    assert follower.power_ons == 1
    cast(FakeChild, follower.vm).status = 1
    assert follower.revive() == (
        "QEMU exited with status 1: qemu-system-x86_64: terminating on signal 15"
    )
    plain, _ = _follower(tmp_path, ["qemu-system-x86_64"])  # resets inside QEMU
    cast(FakeChild, plain.vm).status = 0
    assert plain.revive() is not None
    assert plain.power_ons == 0
