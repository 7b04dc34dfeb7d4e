"""The lab machine's BMCs (netinstall/lab/bmc.py) without QEMU: each started as the lab
starts it, the host registered with it and switched by the operator's commands, and the
power changes the lab would carry out read from its listener.

Redfish: sushy-emulator with the fake driver announces each change to the lab's listener,
which reads the system when a change is due so that the driver applies it (1 to 11 s).
IPMI: the lab's pyghmi BMC reads the power from a QMP socket; here a small QMP server
on a unix socket stands for QEMU's (it answers ``query-status`` and records the rest).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netinstall.lab import bmc
from netinstall.lab.follow import PowerChange
from tests.fake_qmp import FakeQmp
from tests.integration.test_bmc_emulators import run

pytestmark = pytest.mark.integration

MAC = "52:54:00:77:00:0a"
WITHIN = 25.0  # seconds: the fake driver's delay (11 s at most) and a margin


def _argv(network_first: bool) -> list[str]:
    return ["qemu", "network-first" if network_first else "disk-first"]


def _changes(lab: bmc.LabBmc, count: int) -> list[PowerChange]:
    found: list[PowerChange] = []
    deadline = time.monotonic() + WITHIN
    while len(found) < count and time.monotonic() < deadline:
        found += lab.notices.take()
        time.sleep(0.2)
    return found


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    where = tmp_path / "srv"
    code, _, err = run("server", "init", str(where))
    assert code == 0, err
    code, _, err = run("host", "add", MAC, "--dir", str(where))
    assert code == 0, err
    return where


def _register(lab: bmc.LabBmc, server_dir: Path) -> None:
    code, _, err = run("host", "set", MAC, "--dir", str(server_dir), "--bmc", lab.url,
                       "--bmc-password-file", str(lab.password_file))  # fmt: skip
    assert code == 0, err
    assert lab.password_file.stat().st_mode & 0o077 == 0


def test_redfish_rearm_powers_the_machine_on_network_first_then_off(
    tmp_path: Path, server_dir: Path
) -> None:
    lab = bmc.start("redfish", tmp_path, mac=MAC, name="lab", argv_for=_argv, qmp=None)
    try:
        _register(lab, server_dir)
        code, out, err = run("host", "rearm", MAC, "--power", "--dir", str(server_dir))
        assert code == 0, err
        assert "powered on" in out
        [on] = _changes(lab, 1)
        assert on.on
        assert on.argv == ["qemu", "network-first"]  # the override: Pxe
        assert "boot override Pxe" in on.why
        code, out, err = run("host", "power", MAC, "off", "--dir", str(server_dir))
        assert code == 0, err
        [off] = _changes(lab, 1)
        assert not off.on
        assert off.argv is None
        # On again, then the guest powers off by itself: the emulator is told, and says off.
        code, out, err = run("host", "power", MAC, "on", "--dir", str(server_dir))
        assert code == 0, err
        [on] = _changes(lab, 1)
        assert on.on
        lab.notices.machine_off()
        deadline = time.monotonic() + WITHIN
        while time.monotonic() < deadline:
            code, out, err = run("host", "power", MAC, "status", "--dir", str(server_dir))
            if "power off" in out:
                break
            time.sleep(0.5)
        assert "power off" in out, out
        assert lab.notices.take() == []  # its own off notices start or stop nothing
        password = lab.password_file.read_text().strip()
        for where in (tmp_path / "bmc.log", tmp_path / "bmc-redfish.conf"):
            assert password not in where.read_text()
    finally:
        lab.stop()
    assert lab.child.exited() is not None


@pytest.fixture
def ipmi_lab(tmp_path: Path) -> Iterator[bmc.LabBmc]:
    qmp = tmp_path / "qmp.sock"
    lab = bmc.start("ipmi", tmp_path, mac=MAC, name="lab", argv_for=_argv, qmp=qmp)
    try:
        yield lab
    finally:
        lab.stop()


def test_ipmi_power_follows_qmp_and_rearm_boots_from_the_network(
    ipmi_lab: bmc.LabBmc, server_dir: Path, tmp_path: Path
) -> None:
    _register(ipmi_lab, server_dir)
    code, out, err = run("host", "power", MAC, "status", "--dir", str(server_dir))
    assert code == 0, err
    assert "off" in out  # no QEMU answers on the QMP socket
    code, out, err = run("host", "rearm", MAC, "--power", "--dir", str(server_dir))
    assert code == 0, err
    [on] = _changes(ipmi_lab, 1)
    assert on.on
    assert on.argv == ["qemu", "network-first"]
    qemu = FakeQmp(tmp_path / "qmp.sock")  # the lab started QEMU
    try:
        code, out, err = run("host", "power", MAC, "status", "--dir", str(server_dir))
        assert code == 0, err
        assert "on" in out
        code, out, err = run("host", "power", MAC, "cycle", "--dir", str(server_dir))
        assert code == 0, err
        assert "system_reset" in qemu.commands  # a reset is QEMU's, the lab restarts it
        assert ipmi_lab.notices.take() == []
        code, out, err = run("host", "power", MAC, "off", "--dir", str(server_dir))
        assert code == 0, err
        [off] = _changes(ipmi_lab, 1)
        assert not off.on
    finally:
        qemu.close()
