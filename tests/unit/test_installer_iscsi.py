"""installer_core.iscsi: the iBFT read from a sysfs tree, the storage NIC, login, the LUN."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from answerfile.bootargs import parse_cmdline
from answerfile.locations import parse_disk
from answerfile.model import AdminInterface, Disk, DiskKind, PrimaryDisk, Proto
from common.errors import InputError
from installer_core import iscsi, network, planning
from installer_core.install import steps_of
from tests.unit.test_installer_fakes import FakeRunner, answer_for

TARGET = "iqn.2026-12.org.netinstall:lab"
INITIATOR = "iqn.2010-04.org.ipxe:lab01"
STORAGE_MAC = "52:54:00:78:00:01"
ADMIN_MAC = "52:54:00:77:00:01"


NO_GATEWAY = "0.0.0.0"  # noqa: S104 - the kernel's rendering of an empty address


def ibft_tree(root: Path, *, lun: str = "01000000", gateway: str = NO_GATEWAY) -> Path:
    """What the kernel's iscsi_ibft shows for iPXE's table (one NIC, one target)."""
    files = {
        "initiator/initiator-name": INITIATOR,
        "initiator/flags": "3",
        "ethernet0/index": "0",
        "ethernet0/mac": STORAGE_MAC.upper(),
        "ethernet0/ip-addr": "192.168.78.50",
        "ethernet0/prefix-len": "24",
        "ethernet0/subnet-mask": "255.255.255.0",
        "ethernet0/gateway": gateway,
        "ethernet0/origin": "1",
        "ethernet0/vlan": "0",
        "target0/index": "0",
        "target0/flags": "3",
        "target0/ip-addr": "192.168.78.1",
        "target0/port": "3260",
        "target0/lun": lun,
        "target0/nic-assoc": "0",
        "target0/target-name": TARGET,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


def sysfs(tmp_path: Path) -> iscsi.System:
    net = tmp_path / "net"
    for name, mac in (("eth0", ADMIN_MAC), ("eth1", STORAGE_MAC)):
        (net / name).mkdir(parents=True)
        (net / name / "address").write_text(mac + "\n")
        (net / name / "type").write_text("1\n")
        (net / name / "carrier").write_text("1\n")
    return iscsi.System(
        runner=FakeRunner(),
        ibft=tmp_path / "ibft",
        sessions=tmp_path / "sessions",
        sys_net=net,
        sleep=lambda _s: None,
        dev=Path("/dev"),
    )


def add_session(sessions: Path, target: str = TARGET, luns: dict[int, str] | None = None) -> None:
    """A logged-in session as /sys/class/iscsi_session shows it, with its disks."""
    number = len(list(sessions.glob("session*"))) + 1 if sessions.exists() else 1
    session = sessions / f"session{number}"
    session.mkdir(parents=True)
    (session / "targetname").write_text(target + "\n")
    for lun, name in (luns or {1: "sda"}).items():
        (session / "device" / "target2:0:0" / f"2:0:0:{lun}" / "block" / name).mkdir(parents=True)


def test_the_ibft_is_read_as_ipxe_publishes_it(tmp_path: Path) -> None:
    found = iscsi.read_ibft(ibft_tree(tmp_path / "ibft"))
    assert found.initiator == INITIATOR
    nic = found.nics[0]
    assert (nic.mac, nic.address, nic.gateway, nic.dhcp) == (
        STORAGE_MAC,
        ipaddress.IPv4Interface("192.168.78.50/24"),
        None,
        False,
    )
    target = found.boot_target
    assert (target.address, target.port, target.name, target.lun, target.nic) == (
        "192.168.78.1",
        3260,
        TARGET,
        1,
        0,
    )


@pytest.mark.parametrize(
    ("text", "lun"),
    [("01000000", 1), ("00000000", 0), ("0ff000000", 255), ("0a000000", 10), ("40101000", None),
     (None, None), ("zz", None)],
)  # fmt: skip
def test_lun_bytes_as_the_kernel_prints_them(text: str | None, lun: int | None) -> None:
    assert iscsi.parse_lun(text) == lun


def test_no_ibft_is_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="the firmware published no iSCSI Boot Firmware Table"):
        iscsi.read_ibft(tmp_path / "missing")


def test_an_ibft_without_a_target_is_refused(tmp_path: Path) -> None:
    root = ibft_tree(tmp_path / "ibft")
    for path in sorted((root / "target0").iterdir()):
        path.unlink()
    with pytest.raises(InputError, match="the iBFT names no target"):
        iscsi.read_ibft(root)


def test_attach_brings_up_the_storage_nic_and_logs_in(tmp_path: Path) -> None:
    system = sysfs(tmp_path)
    ibft_tree(system.ibft)
    add_session(system.sessions, luns={0: "sdz", 1: "sdb"})  # LUN 0: tgtd's controller-less disk
    san = iscsi.attach_ibft(False, system)
    assert system.runner.calls == [  # type: ignore[attr-defined]
        ["ip", "link", "set", "dev", "eth1", "up"],
        ["ip", "addr", "replace", "192.168.78.50/24", "dev", "eth1"],
        ["iscsistart", "-i", INITIATOR, "-t", TARGET, "-g", "1", "-a", "192.168.78.1",
         "-p", "3260"],
    ]  # fmt: skip
    assert san is not None
    assert san.storage_nic == "eth1"
    assert san.storage_macs == (STORAGE_MAC,)
    assert san.disks == {"iscsi:ibft": Path("/dev/sdb")}


def test_a_target_beyond_the_subnet_gets_a_route_through_the_gateway(tmp_path: Path) -> None:
    system = sysfs(tmp_path)
    ibft_tree(system.ibft, gateway="192.168.78.254")
    (system.ibft / "target0/ip-addr").write_text("10.9.0.5\n")
    add_session(system.sessions)
    iscsi.attach_ibft(False, system)
    assert ["ip", "route", "replace", "10.9.0.5/32", "via", "192.168.78.254", "dev", "eth1"] in (
        system.runner.calls  # type: ignore[attr-defined]
    )


def test_a_refused_login_names_target_and_reason(tmp_path: Path) -> None:
    system = sysfs(tmp_path)
    ibft_tree(system.ibft)
    system.runner = FakeRunner(results={"iscsistart": 19})
    with pytest.raises(InputError) as caught:
        iscsi.attach_ibft(False, system)
    message = str(caught.value)
    assert message.startswith(f"iSCSI login to {TARGET} at 192.168.78.1:3260 as {INITIATOR}")
    assert "iscsistart broke" in message
    assert "nothing was written" in message


def test_a_missing_lun_is_reported_with_what_the_target_shows(tmp_path: Path) -> None:
    system = sysfs(tmp_path)
    ibft_tree(system.ibft, lun="02000000")
    add_session(system.sessions, luns={1: "sda"})
    with pytest.raises(InputError, match=r"has no LUN 2 \(it shows LUN 1 \(sda\)\)"):
        iscsi.attach_ibft(False, system)


def test_an_rfc4173_disk_logs_in_over_the_storage_nic(tmp_path: Path) -> None:
    system = sysfs(tmp_path)
    ibft_tree(system.ibft)
    add_session(system.sessions)
    san = iscsi.attach_ibft(False, system)
    other = "iqn.2026-12.org.netinstall:other"
    add_session(system.sessions, target=other, luns={3: "sdc"})
    disk = parse_disk(f"iscsi:192.168.78.1::3260:3:{other}")
    assert isinstance(disk, Disk)
    assert iscsi.san_device(san, disk, "primary-disk", system) == Path("/dev/sdc")
    assert system.runner.calls[-1][:5] == ["iscsistart", "-i", INITIATOR, "-t", other]  # type: ignore[attr-defined]


def add_path(root: Path, index: int, address: str, *, nic: int = 0, lun: str = "01000000") -> None:
    """A further target entry, as iPXE publishes one per sanhook URI (a path)."""
    files = {"index": str(index), "flags": "3", "ip-addr": address, "port": "3260",
             "lun": lun, "nic-assoc": str(nic), "target-name": TARGET}  # fmt: skip
    for name, text in files.items():
        (root / f"target{index}").mkdir(parents=True, exist_ok=True)
        (root / f"target{index}" / name).write_text(text + "\n")


def _login_portals(system: iscsi.System) -> list[str]:
    calls = system.runner.calls  # type: ignore[attr-defined]
    return [argv[argv.index("-a") + 1] for argv in calls if argv[0] == "iscsistart"]


def test_with_multipath_the_installer_logs_in_over_every_path(tmp_path: Path) -> None:
    system = sysfs(tmp_path)
    ibft_tree(system.ibft)
    add_path(system.ibft, 1, "192.168.78.2")
    add_path(system.ibft, 2, "192.168.78.3", lun="02000000")  # another LUN: not a path
    add_session(system.sessions, luns={1: "sda"})
    add_session(system.sessions, luns={1: "sdb"})
    san = iscsi.attach_ibft(True, system)
    assert _login_portals(system) == ["192.168.78.1", "192.168.78.2"]
    assert san is not None
    assert [t for t, _a, _p in san.logged_in] == [TARGET, TARGET]
    assert san.disks == {"iscsi:ibft": Path("/dev/sda")}


def test_every_path_must_show_the_lun(tmp_path: Path) -> None:
    system = sysfs(tmp_path)
    ibft_tree(system.ibft)
    add_path(system.ibft, 1, "192.168.78.2")
    add_session(system.sessions, luns={1: "sda"})  # the second session shows no disk
    with pytest.raises(InputError, match=r"has no LUN 1 on 2 paths \(it shows LUN 1 \(sda\)\)"):
        iscsi.attach_ibft(True, system)


def test_one_path_down_of_two_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    system = sysfs(tmp_path)
    system.runner = FakeRunner(results={"iscsistart": lambda a: 8 if "192.168.78.1" in a else ""})
    ibft_tree(system.ibft)
    add_path(system.ibft, 1, "192.168.78.2")
    add_session(system.sessions, luns={1: "sdb"})  # the one session that came up
    san = iscsi.attach_ibft(True, system)
    assert san is not None
    assert san.disks == {"iscsi:ibft": Path("/dev/sdb")}
    assert san.logged_in == [(TARGET, "192.168.78.2", 3260)]
    assert "path 192.168.78.1:3260 is down, going on without it" in caplog.text


def test_every_path_down_is_the_first_path_s_error(tmp_path: Path) -> None:
    system = sysfs(tmp_path)
    system.runner = FakeRunner(results={"iscsistart": 8})
    ibft_tree(system.ibft)
    add_path(system.ibft, 1, "192.168.78.2")
    with pytest.raises(InputError, match=f"iSCSI login to {TARGET} at 192.168.78.1:3260"):
        iscsi.attach_ibft(True, system)


def test_without_multipath_only_the_first_path_is_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    system = sysfs(tmp_path)
    ibft_tree(system.ibft)
    add_path(system.ibft, 1, "192.168.78.2")
    add_session(system.sessions)
    iscsi.attach_ibft(False, system)
    assert _login_portals(system) == ["192.168.78.1"]
    assert "names 2 paths to the boot LUN, but device_mapper_multipath is off" in caplog.text


def test_two_fabrics_bring_up_both_storage_nics(tmp_path: Path) -> None:
    """The UCS layout: fabric A and fabric B, a NIC and a portal on each."""
    system = sysfs(tmp_path)
    second = "52:54:00:79:00:01"
    (system.sys_net / "eth2").mkdir()
    for name, text in (("address", second), ("type", "1"), ("carrier", "1")):
        (system.sys_net / "eth2" / name).write_text(text + "\n")
    ibft_tree(system.ibft)
    for name, text in (("index", "1"), ("mac", second), ("ip-addr", "192.168.79.50"),
                       ("prefix-len", "24"), ("gateway", NO_GATEWAY), ("origin", "1")):  # fmt: skip
        (system.ibft / "ethernet1").mkdir(exist_ok=True)
        (system.ibft / "ethernet1" / name).write_text(text + "\n")
    add_path(system.ibft, 1, "192.168.79.1", nic=1)
    add_session(system.sessions, luns={1: "sda"})
    add_session(system.sessions, luns={1: "sdb"})
    san = iscsi.attach_ibft(True, system)
    calls = system.runner.calls  # type: ignore[attr-defined]
    assert ["ip", "addr", "replace", "192.168.79.50/24", "dev", "eth2"] in calls
    assert _login_portals(system) == ["192.168.78.1", "192.168.79.1"]
    assert san is not None
    assert san.storage_nics == {0: "eth1", 1: "eth2"}
    found = planning.NetworkFound(storage_names=san.storage_names, storage_macs=san.storage_macs)
    answer = answer_for(admin_interface=AdminInterface(name="eth2", proto=Proto.DHCP))
    with pytest.raises(InputError, match="admin-interface eth2 is the iSCSI storage NIC"):
        planning.plan_network(parse_cmdline("install use_ibft"), answer, found)


def test_an_iscsi_disk_without_use_ibft_is_refused() -> None:
    with pytest.raises(InputError, match="an iSCSI disk needs use_ibft"):
        iscsi.san_device(None, Disk("iscsi:ibft", DiskKind.IBFT), "primary-disk")
    answer = answer_for(primary_disk=PrimaryDisk(Disk("iscsi:ibft", DiskKind.IBFT)))
    with pytest.raises(InputError, match="an iSCSI disk needs use_ibft"):
        planning.check_options(parse_cmdline("install"), answer)  # refused while planning


def _attached(tmp_path: Path) -> tuple[iscsi.SanState, iscsi.System]:
    system = sysfs(tmp_path)
    ibft_tree(system.ibft)
    add_session(system.sessions)
    return iscsi.attach_ibft(False, system), system


def test_the_storage_nic_never_fetches_the_answer_file(tmp_path: Path) -> None:
    san, system = _attached(tmp_path)
    nics = network.list_nics(system.sys_net)
    every = parse_cmdline("install use_ibft").answerfile_device
    assert [n.name for n in network.select_nics(every, nics, san.storage_macs)] == ["eth0"]
    boot = parse_cmdline("install use_ibft BOOTIF=01-52-54-00-78-00-01").answerfile_device
    with pytest.raises(InputError, match="BOOTIF=52:54:00:78:00:01 is the iSCSI storage NIC"):
        network.select_nics(boot, nics, san.storage_macs)


@pytest.mark.parametrize(
    "admin",
    [
        AdminInterface(name="eth1", proto=Proto.DHCP),
        AdminInterface(hwaddr=STORAGE_MAC, proto=Proto.DHCP),
    ],
)
def test_the_storage_nic_is_never_the_management_interface(
    tmp_path: Path, admin: AdminInterface
) -> None:
    san, system = _attached(tmp_path)
    found = planning.NetworkFound(
        fetched_by=network.Nic("eth0", ADMIN_MAC),
        nics=tuple(network.list_nics(system.sys_net)),
        storage_names=san.storage_names,
        storage_macs=san.storage_macs,
    )
    answer = answer_for(
        primary_disk=PrimaryDisk(Disk("iscsi:ibft", DiskKind.IBFT)), admin_interface=admin
    )
    with pytest.raises(InputError, match="is the iSCSI storage NIC named by the iBFT"):
        planning.plan_network(parse_cmdline("install use_ibft"), answer, found)
    plan = planning.plan_network(parse_cmdline("install use_ibft"), answer_for(), found)
    assert (plan.admin_name, plan.storage_nics) == ("eth0", ("eth1",))


def test_use_ibft_puts_the_iscsi_step_before_the_network() -> None:
    names = [name for name, _weight in steps_of(parse_cmdline("install use_ibft"))]
    assert names[:2] == ["iscsi", "network"]
    assert "iscsi" not in [name for name, _weight in steps_of(parse_cmdline("install"))]
