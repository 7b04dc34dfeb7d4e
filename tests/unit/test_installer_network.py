"""installer_core.network: which NICs, which commands, which MAC is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from answerfile.bootargs import parse_cmdline
from common.errors import InputError, NetinstallError
from installer_core.network import System, bring_up, list_nics
from tests.unit.test_installer_fakes import FakeRunner

NICS = {
    "eth0": ("52:54:00:00:00:01", "1", "1"),
    "eth1": ("52:54:00:00:00:02", "1", "0"),
    "lo": ("00:00:00:00:00:00", "772", "1"),
    "sit0": ("00:00:00:00", "776", "0"),
}


def _system(
    tmp_path: Path, runner: FakeRunner, nics: dict[str, tuple[str, str, str]] = NICS
) -> System:
    sys_net = tmp_path / "net"
    for name, (mac, kind, carrier) in nics.items():
        (sys_net / name).mkdir(parents=True)
        (sys_net / name / "address").write_text(mac.upper() + "\n")
        (sys_net / name / "type").write_text(kind + "\n")
        (sys_net / name / "carrier").write_text(carrier + "\n")
    return System(runner, sys_net, tmp_path / "resolv.conf", sleep=lambda _s: None)


def _dhclient(name: str) -> list[str]:
    return [
        "dhclient", "-1", "-v", "-pf", f"/run/dhclient.{name}.pid",
        "-lf", f"/run/dhclient.{name}.leases", name,
    ]  # fmt: skip


def test_only_ethernet_nics_are_listed(tmp_path: Path) -> None:
    system = _system(tmp_path, FakeRunner())
    assert [n.name for n in list_nics(system.sys_net)] == ["eth0", "eth1"]
    assert list_nics(system.sys_net)[0].mac == "52:54:00:00:00:01"


def test_dhcp_on_the_bootif_nic(tmp_path: Path) -> None:
    runner = FakeRunner()
    nic = bring_up(
        parse_cmdline("install BOOTIF=01-52-54-00-00-00-02"), (), _system(tmp_path, runner)
    )
    assert runner.calls == [["ip", "link", "set", "dev", "eth1", "up"], _dhclient("eth1")]
    assert (nic.mac, nic.name) == ("52:54:00:00:00:02", "eth1")


def test_all_nics_come_up_and_the_first_with_a_lease_wins(tmp_path: Path) -> None:
    leases = iter([1, ""])  # eth0 (with a carrier, tried first) fails, eth1 gets a lease

    def dhclient(_argv: object) -> str:
        result = next(leases)
        if isinstance(result, int):
            from common.errors import CommandError

            raise CommandError(["dhclient"], 2, "", "no lease")
        return result

    runner = FakeRunner({"dhclient": dhclient})
    nic = bring_up(parse_cmdline("install"), (), _system(tmp_path, runner))
    assert runner.calls == [
        ["ip", "link", "set", "dev", "eth0", "up"],
        ["ip", "link", "set", "dev", "eth1", "up"],
        _dhclient("eth0"),
        _dhclient("eth1"),
    ]
    assert nic.mac == "52:54:00:00:00:02"


def test_no_lease_anywhere_fails_the_step(tmp_path: Path) -> None:
    runner = FakeRunner({"dhclient": 2})
    with pytest.raises(NetinstallError, match="no DHCP lease on eth0, eth1"):
        bring_up(parse_cmdline("install"), (), _system(tmp_path, runner))


def test_static_configuration(tmp_path: Path) -> None:
    runner = FakeRunner()
    args = parse_cmdline(
        "install answerfile_device=eth0 "
        "network_config=static:ip=10.0.0.5;netmask=255.255.255.0;gateway=10.0.0.1;dns=10.0.0.2,10.0.0.3",
    )
    system = _system(tmp_path, runner)
    nic = bring_up(args, (), system)
    assert runner.calls == [
        ["ip", "link", "set", "dev", "eth0", "up"],
        ["ip", "addr", "add", "10.0.0.5/24", "dev", "eth0"],
        ["ip", "route", "add", "default", "via", "10.0.0.1", "dev", "eth0"],
    ]
    assert system.resolv_conf.read_text() == "nameserver 10.0.0.2\nnameserver 10.0.0.3\n"
    assert nic.mac == "52:54:00:00:00:01"


def test_a_device_by_mac_and_a_missing_device(tmp_path: Path) -> None:
    runner = FakeRunner()
    system = _system(tmp_path, runner)
    assert (
        bring_up(parse_cmdline("install answerfile_device=52-54-00-00-00-02"), (), system).name
        == "eth1"
    )
    with pytest.raises(InputError, match=r"answerfile_device=eth7: no such interface \(found eth0"):
        bring_up(parse_cmdline("install answerfile_device=eth7"), (), system)
    with pytest.raises(InputError, match="BOOTIF=aa:bb:cc:dd:ee:ff: no such interface"):
        bring_up(parse_cmdline("install BOOTIF=aa:bb:cc:dd:ee:ff"), (), system)


def test_no_carrier_is_waited_for_then_tried_anyway(tmp_path: Path) -> None:
    slept: list[float] = []
    runner = FakeRunner()
    system = _system(tmp_path, runner, {"eth0": ("52:54:00:00:00:01", "1", "0")})
    system.sleep = slept.append
    bring_up(parse_cmdline("install"), (), system)
    assert sum(slept) == pytest.approx(30.0)
    assert runner.calls[-1] == _dhclient("eth0")
