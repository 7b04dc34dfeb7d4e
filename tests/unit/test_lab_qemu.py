"""The lab's QEMU command lines and namespace commands (pure parts of netinstall.lab)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from common.errors import InputError, NetinstallError
from common.firmware import Firmware
from netinstall.lab import follow, netns, qemu, services


def _machine(firmware: Firmware, tmp_path: Path) -> qemu.Machine:
    return qemu.Machine(
        firmware=firmware,
        mac=qemu.lab_mac(firmware),
        disk=tmp_path / "disk.raw",
        serial=tmp_path / "serial.log",
        monitor=tmp_path / "monitor.sock",
        tap="tap0",
        ovmf_vars=tmp_path / "vars.fd" if firmware == "uefi" else None,
    )


def _value(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]


def test_each_firmware_has_its_own_mac() -> None:
    assert qemu.lab_mac("bios") == "52:54:00:77:00:01"
    assert qemu.lab_mac("uefi") == "52:54:00:77:00:02"


def test_bios_machine_boots_the_nic_first_with_the_ipxe_rom(tmp_path: Path) -> None:
    argv = qemu.argv(_machine("bios", tmp_path))
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
    assert _value(argv, "-m") == ["3072"]
    # RAM backed at power-on, as a real machine's is
    assert _value(argv, "-object") == [
        "memory-backend-ram,id=ram0,size=3072M,prealloc=on,prealloc-threads=2"
    ]
    devices = _value(argv, "-device")
    assert devices[0] == "e1000,netdev=n0,mac=52:54:00:77:00:01,bootindex=1"  # default ROM
    assert devices[1] == "virtio-blk-pci,drive=d0,bootindex=2"
    assert _value(argv, "-machine") == ["pc,memory-backend=ram0"]
    assert "if=pflash" not in " ".join(argv)
    assert _value(argv, "-netdev") == ["tap,id=n0,ifname=tap0,script=no,downscript=no"]
    assert _value(argv, "-serial") == ["chardev:con0"]
    assert _value(argv, "-chardev") == [f"file,id=con0,path={tmp_path / 'serial.log'},append=on"]
    assert follow.vm_serial(argv) == tmp_path / "serial.log"
    assert follow.monitor_socket(argv) == tmp_path / "monitor.sock"
    assert _value(argv, "-action") == ["reboot=shutdown"]  # a reboot is a power cycle
    assert _value(argv, "-monitor") == [f"unix:{tmp_path / 'monitor.sock'},server=on,wait=off"]
    assert "-no-reboot" not in argv  # the installer reboots into the installed system
    assert "-cpu" not in argv


def test_uefi_machine_uses_ovmf_and_its_own_pxe_client(tmp_path: Path) -> None:
    argv = qemu.argv(_machine("uefi", tmp_path))
    assert _value(argv, "-machine") == ["q35,memory-backend=ram0"]
    drives = _value(argv, "-drive")
    assert drives[0] == f"if=pflash,format=raw,readonly=on,file={qemu.OVMF_CODE}"
    assert drives[1] == f"if=pflash,format=raw,file={tmp_path / 'vars.fd'}"
    assert drives[2].startswith(f"file={tmp_path / 'disk.raw'},if=none,id=d0,format=raw")
    nic = _value(argv, "-device")[0]
    assert nic.startswith("virtio-net-pci,")
    assert nic.endswith(",bootindex=1,romfile=")
    assert "name=opt/org.tianocore/IPv6PXESupport,string=n" in _value(argv, "-fw_cfg")
    assert "name=opt/org.tianocore/IPv4PXESupport,string=n" not in _value(argv, "-fw_cfg")


def test_uefi_http_boot_machine_has_no_ipv4_pxe(tmp_path: Path) -> None:
    from dataclasses import replace

    argv = qemu.argv(replace(_machine("uefi", tmp_path), http_boot=True))
    assert "name=opt/org.tianocore/IPv4PXESupport,string=n" in _value(argv, "-fw_cfg")
    with pytest.raises(InputError, match="needs a UEFI machine"):
        replace(_machine("bios", tmp_path), http_boot=True)


def test_only_the_multipath_machine_keeps_resets(tmp_path: Path) -> None:
    """Its scenario unplugs a path on the monitor: a new QEMU would plug it back in."""
    machine = replace(_machine("bios", tmp_path), multipath=True)
    assert not machine.reboot_power_cycles
    assert "-action" not in qemu.argv(machine)
    assert _machine("uefi", tmp_path).reboot_power_cycles


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_the_machine_has_the_cpus_it_is_given(firmware: Firmware, tmp_path: Path) -> None:
    machine = _machine(firmware, tmp_path)
    assert _value(qemu.argv(machine), "-smp") == [str(qemu.CPUS)]
    assert _value(qemu.argv(replace(machine, cpus=3)), "-smp") == ["3"]
    with pytest.raises(InputError, match="at least one CPU, not 0"):
        replace(machine, cpus=0)


def test_uefi_machine_needs_a_vars_copy(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="OVMF variable store"):
        qemu.Machine("uefi", "52:54:00:77:00:02", tmp_path, tmp_path, tmp_path)


def test_make_disk_is_sparse(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    qemu.make_disk(disk, 2**30)
    assert disk.stat().st_size == 2**30
    assert disk.stat().st_blocks == 0


def test_namespace_commands_build_bridge_addresses_and_tap() -> None:
    net = netns.LabNetwork(namespace="ni-lab-0a1b2c3d")
    commands = [" ".join(c) for c in netns.setup_commands(net)]
    assert commands[0] == "ip netns add ni-lab-0a1b2c3d"
    assert "ip -n ni-lab-0a1b2c3d link add br0 type bridge" in commands
    assert "ip -n ni-lab-0a1b2c3d addr add 192.168.77.1/24 dev br0" in commands
    assert "ip -n ni-lab-0a1b2c3d addr add fd77::1/64 dev br0 nodad" in commands
    assert commands[-2:] == [
        "ip -n ni-lab-0a1b2c3d link set tap0 master br0",
        "ip -n ni-lab-0a1b2c3d link set tap0 up",
    ]
    assert net.server_ip == "192.168.77.1"
    assert net.ra_prefix == "fd77::"


def test_new_networks_get_distinct_lab_names() -> None:
    first, second = netns.new_network(), netns.new_network()
    assert first.namespace.startswith("ni-lab-")
    assert len(first.namespace) == 15
    assert first.namespace != second.namespace


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"namespace": "other"}, "is not like ni-lab-"),
        ({"range_start": "10.0.0.5"}, "outside 192.168.77.0/24"),
    ],
)
def test_lab_network_rejects_bad_values(changes: dict[str, str], problem: str) -> None:
    values = {"namespace": "ni-lab-00", **changes}
    with pytest.raises(InputError, match=problem):
        netns.LabNetwork(**values)


def test_server_runs_in_the_namespace_with_full_dhcp(tmp_path: Path) -> None:
    net = netns.LabNetwork(namespace="ni-lab-00")
    argv = netns.netns_exec(net.namespace, services.server_argv(tmp_path, net))
    assert argv[:4] == ["ip", "netns", "exec", "ni-lab-00"]
    text = " ".join(argv)
    assert f"server run {tmp_path} --bind 192.168.77.1 --tftp-port 69 --http-port 8080" in text
    assert "--dhcp full --interface br0 --range 192.168.77.100,192.168.77.200" in text
    assert text.endswith("--boot-transport http")
    tftp_only = services.server_argv(tmp_path, net, "tftp")
    assert tftp_only[-2:] == ["--boot-transport", "tftp"]


# -- the user-mode fallback ----------------------------------------------------------


def test_user_mode_machine_gets_slirp_with_our_export(tmp_path: Path) -> None:
    from dataclasses import replace

    from netinstall.lab import usernet

    user = usernet.UserNetwork(export=tmp_path / "tftp", http_port=18080, boot_file="pxelinux.0")
    machine = replace(_machine("bios", tmp_path), tap=None, netdev=user.netdev())
    assert _value(qemu.argv(machine), "-netdev") == [
        f"user,id=n0,net=10.0.2.0/24,host=10.0.2.2,tftp={tmp_path / 'tftp'},bootfile=pxelinux.0"
    ]
    server = user.server_argv(tmp_path / "server")
    assert server[server.index("--bind") + 1] == "127.0.0.1"
    assert server[server.index("--http-port") + 1] == "18080"
    assert server[server.index("--dhcp") + 1] == "off"
    assert str(user.server) == "10.0.2.2/24"


def test_user_mode_export_links_the_netboot_tree(tmp_path: Path) -> None:
    from netinstall.lab import usernet

    netboot = tmp_path / "netboot"
    netboot.mkdir()
    (netboot / "pxelinux.0").write_bytes(b"pxe")
    user = usernet.new_user_network(tmp_path, "uefi")
    assert user.boot_file == "grubx64.efi"
    usernet.Export(user, netboot, "52:54:00:77:00:02", tmp_path / "server")
    assert (user.export / "pxelinux.0").read_bytes() == b"pxe"
    assert usernet.config_paths("52:54:00:77:00:02")[:2] == [
        "pxelinux.cfg/01-52-54-00-77-00-02",
        "grub/grub.cfg-01-52-54-00-77-00-02",
    ]


def test_a_san_machine_has_a_storage_nic_and_no_disk(tmp_path: Path) -> None:
    from dataclasses import replace

    machine = replace(
        _machine("bios", tmp_path),
        storage_tap="tap1",
        storage_mac="52:54:00:78:00:01",
        local_disk=False,
    )
    argv = qemu.argv(machine)
    assert _value(argv, "-device") == [
        "e1000,netdev=n0,mac=52:54:00:77:00:01,bootindex=1",
        "e1000,netdev=n1,mac=52:54:00:78:00:01,romfile=",
    ]
    assert "tap,id=n1,ifname=tap1,script=no,downscript=no" in _value(argv, "-netdev")
    assert _value(argv, "-drive") == []
    with pytest.raises(InputError, match="both its tap and its MAC"):
        replace(machine, storage_mac=None)


def test_the_lab_san_commands() -> None:
    from netinstall.lab import san

    storage = san.Storage("ni-lab-0000abcd", "lab-bios", control_port=12345)
    assert storage.root_paths == [
        "iscsi:192.168.78.1::3260:1:iqn.2026-12.org.netinstall.lab:lab-bios"
    ]
    assert storage.host_address == "192.168.78.50/24"
    commands = san.setup_commands(storage)
    assert ["ip", "-n", "ni-lab-0000abcd", "addr", "add", "192.168.78.1/24", "dev", "br1"] in (
        commands
    )
    lun = san.target_commands(storage, Path("/lab/disk.img"))[1]
    assert lun[:3] == ["tgtadm", "-C", "12345"]
    assert lun[-4:] == ["--lun", "1", "-b", "/lab/disk.img"]


def test_the_lab_san_with_two_portals() -> None:
    from netinstall.lab import san

    storage = san.new_storage("ni-lab-0000abcd", "lab-uefi", portals=2)
    assert [p.split(":")[1] for p in storage.root_paths] == ["192.168.78.1", "192.168.78.2"]
    assert ["ip", "-n", "ni-lab-0000abcd", "addr", "add", "192.168.78.2/24", "dev", "br1"] in (
        san.setup_commands(storage)
    )
    first = san.target_commands(storage, Path("/lab/disk.img"))[0]
    assert first[-4:] == ["--mode", "portal", "--param", "portal=192.168.78.2:3260"]
    with pytest.raises(NetinstallError, match="1 to 2 portals"):
        san.new_storage("ni-lab-0000abcd", "lab-uefi", portals=3)


def test_a_disk_first_start_swaps_the_boot_order_and_qmp_is_on_request(tmp_path: Path) -> None:
    """A BMC's power-on without the network override boots the disk first (lab/bmc.py)."""
    machine = _machine("uefi", tmp_path)
    assert "-qmp" not in qemu.argv(machine)
    disk_first = qemu.argv(replace(machine, network_first=False, qmp=tmp_path / "qmp.sock"))
    devices = _value(disk_first, "-device")
    assert ",bootindex=2," in devices[0]  # the NIC
    assert devices[1] == "virtio-blk-pci,drive=d0,bootindex=1"
    assert _value(disk_first, "-qmp") == [f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off"]
