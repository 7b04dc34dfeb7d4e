"""The lab BMC's listener (netinstall/lab/bmc.py ``Notices``), the follower carrying out
its power changes (netinstall/lab/follow.py), and the IPMI BMC's QMP client
(netinstall/lab/ipmi_bmc.py ``qmp``): in-process, no BMC and no QEMU started."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from netinstall.lab import bmc, follow, services
from netinstall.lab.console import Tracker
from netinstall.lab.follow import Follower, Launch, PowerChange
from netinstall.lab.ipmi_bmc import qmp
from tests.fake_qmp import FakeQmp
from tests.unit.test_lab_follow import FakeChild

SYSTEM = bmc.system_uuid("52:54:00:77:00:02")


def _argv(network_first: bool) -> list[str]:
    return ["qemu", "network-first" if network_first else "disk-first"]


@pytest.fixture
def notices() -> Iterator[bmc.Notices]:
    poked = threading.Event()
    listener = bmc.Notices(SYSTEM, _argv, poked.set)
    listener.poked = poked  # type: ignore[attr-defined]
    try:
        yield listener
    finally:
        listener.close()


def _put(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="PUT")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _notice(**fields: object) -> bytes:
    return json.dumps({"uuid": SYSTEM, "name": "lab", **fields}).encode()


def test_a_power_change_becomes_one_change_for_the_follower(notices: bmc.Notices) -> None:
    assert _put(notices.url, _notice(power_state="Off", boot_device="Pxe")) == 204
    assert notices.take() == []  # off already: the boot override alone is no power change
    assert _put(notices.url, _notice(power_state="On", boot_device="Pxe")) == 204
    assert _put(notices.url, _notice(power_state="On", boot_device="Pxe")) == 204
    [on] = notices.take()
    assert on == PowerChange(
        True, ["qemu", "network-first"], "its BMC powered it on, boot override Pxe: network first"
    )
    assert _put(notices.url, _notice(power_state="Off")) == 204
    assert _put(notices.url, _notice(power_state="On", boot_device="Hdd")) == 204
    off, again = notices.take()
    assert (off.on, off.argv) == (False, None)
    assert (again.on, again.argv) == (True, ["qemu", "disk-first"])


def test_a_pending_change_is_read_back_when_due(notices: bmc.Notices) -> None:
    """The fake driver applies a change on the next read after its time: the listener reads."""
    due = time.time()
    pending = {"power_state": "On", "apply_time": due}
    assert _put(notices.url, _notice(power_state="Off", pending_power=pending)) == 204
    assert notices.poked.wait(5)  # type: ignore[attr-defined]
    assert notices.take() == []  # pending is not on yet


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 400),
        (json.dumps({"uuid": "another", "power_state": "On"}).encode(), 400),
        (_notice(power_state="Sleeping"), 400),
        (_notice(power_state="On", boot_device=3), 400),
        (b"x" * (bmc.MAX_NOTICE + 1), 413),
    ],
    ids=["not-json", "not-object", "other-system", "bad-power", "bad-boot", "too-big"],
)
def test_a_bad_notice_is_refused_and_changes_nothing(
    notices: bmc.Notices, body: bytes, status: int
) -> None:
    assert _put(notices.url, body) == status
    assert notices.take() == []
    assert notices.power == "Off"


def test_a_guest_power_off_is_said_to_the_bmc_and_its_own_off_notice_changes_nothing() -> None:
    said: list[str] = []
    listener = bmc.Notices(SYSTEM, _argv, None, lambda: said.append("ForceOff"))
    try:
        assert _put(listener.url, _notice(power_state="On")) == 204
        assert [change.on for change in listener.take()] == [True]
        listener.machine_off()
        deadline = time.monotonic() + 5
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
        assert said == ["ForceOff"]
        # The driver's notices of that ForceOff: pending (the power before it), then applied.
        off = {"power_state": "Off", "apply_time": time.time() + 60}
        assert _put(listener.url, _notice(power_state="On", pending_power=off)) == 204
        assert _put(listener.url, _notice(power_state="Off")) == 204
        assert listener.take() == []
        # A restart of a machine that is on: off at once, on when due.
        assert _put(listener.url, _notice(power_state="On")) == 204
        restart = {"power_state": "ForceRestart", "apply_time": time.time() + 60}
        assert _put(listener.url, _notice(power_state="Off", pending_power=restart)) == 204
        assert _put(listener.url, _notice(power_state="On")) == 204
        assert [change.on for change in listener.take()] == [True, False, True]
    finally:
        listener.close()


def _follower(tmp_path: Path, changes: list[PowerChange], events: Path | None = None) -> Follower:
    serial = tmp_path / "serial.log"
    serial.write_text("")
    monitor = f"unix:{tmp_path / 'm.sock'},server=on"
    argv = ["qemu", "-action", "reboot=shutdown", "-monitor", monitor,
            "-chardev", f"file,id=con0,path={serial},append=on"]  # fmt: skip

    class Requests:
        offs = 0

        def take(self) -> list[PowerChange]:
            taken = list(changes)
            changes.clear()
            return taken

        def machine_off(self) -> None:
            self.offs += 1

    server = FakeChild("server", ["netinstall"], tmp_path / "server.log")
    return Follower(
        None, cast(services.Child, server), tmp_path, "52:54:00:77:00:02", 0.0, lambda _: None,
        launch=Launch(argv, tmp_path / "qemu.log"), bmc=Requests(), events=events,
    )  # fmt: skip


def test_the_follower_starts_qemu_once_and_stops_it_on_the_bmcs_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "Child", FakeChild)
    quits: list[Path] = []
    monkeypatch.setattr(services, "quit_qemu", lambda vm, monitor: quits.append(monitor))
    changes: list[PowerChange] = []
    follower = _follower(tmp_path, changes)
    tracker = Tracker()
    assert follower.qemu is None
    assert follower.revive() is None  # off: nothing ended by itself
    assert follower.launch is not None
    started = [*follower.launch.argv, "network-first"]
    changes += [PowerChange(True, started, "on"), PowerChange(True, started, "on again")]
    follower.apply_power(tracker)
    first = follower.vm
    assert first.argv == started
    assert follow.POWERED_ON in tracker.reached
    assert follower.power_ons == 1  # the second "on" found QEMU running: no second QEMU
    cast(FakeChild, first).status = 0  # a guest reboot: the follower starts it again
    assert follower.revive() is None
    assert follower.vm is not first
    assert follower.vm.argv == started
    changes.append(PowerChange(False, None, "off"))
    follower.apply_power(tracker)
    assert follower.qemu is None
    assert quits == [tmp_path / "m.sock"]
    assert follower.revive() is None


def test_a_machine_its_bmc_never_powers_on_is_a_failure(tmp_path: Path) -> None:
    follower = _follower(tmp_path, [])
    follower.off_since = time.monotonic() - follow.OFF_LIMIT - 1
    assert "its BMC did not power it on" in (follower.revive() or "")


def test_qmp_answers_query_status_past_events_and_none_without_qemu(tmp_path: Path) -> None:
    socket_path = tmp_path / "qmp.sock"
    assert qmp(socket_path, "query-status") is None  # no QEMU: the machine is off
    fake = FakeQmp(socket_path, events=True)
    try:
        assert qmp(socket_path, "query-status") == {"status": "running"}
        assert qmp(socket_path, "system_reset") == {}
        assert fake.commands[-2:] == ["qmp_capabilities", "system_reset"]
    finally:
        fake.close()
    assert qmp(socket_path, "query-status") is None  # a socket nobody listens on


def test_a_guest_power_off_leaves_the_machine_off_and_a_reset_starts_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU ends the same way on both (reboot=shutdown); its event socket tells them apart."""
    monkeypatch.setattr(services, "Child", FakeChild)
    events = tmp_path / "events.sock"
    changes: list[PowerChange] = []
    follower = _follower(tmp_path, changes, events)
    assert follower.launch is not None
    for reason, stays_off in (("guest-reset", False), ("guest-shutdown", True)):
        fake = FakeQmp(events, shutdown=reason)
        try:
            changes.append(PowerChange(True, follower.launch.argv, "on"))
            follower.apply_power(Tracker())
            qemu = follower.vm
            assert follower.watch is not None
            assert follower.watch.ended_by(5) == reason  # QEMU said why, then closed
            cast(FakeChild, qemu).status = 0
            assert follower.revive() is None
            assert (follower.qemu is None) == stays_off
            assert cast(Any, follower.bmc).offs == (1 if stays_off else 0)
        finally:
            fake.close()
            events.unlink(missing_ok=True)
        if follower.qemu is not None:  # the reset's new QEMU: off through the BMC
            follower.qemu = None
