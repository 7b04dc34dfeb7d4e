"""SAN boot on the server (issue 8): iPXE scripts that hook and boot a host's iSCSI LUN,
the installer's use_ibft, the registry's checks of SAN settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from answerfile.bootargs import parse_multiboot
from common.errors import InputError
from pxe_server import render
from pxe_server.decide import ClientFacts, boot_file
from pxe_server.model import SanTarget, State
from pxe_server.registry import Registry
from pxe_server.registry_input import san_target
from tests.unit.test_render import BASE, HOST, PROFILE, SETTINGS, check_golden

ROOT = "iscsi:192.168.78.1::3260:1:iqn.2026-12.org.netinstall:lab01"
SAN_PROFILE = replace(PROFILE, name="san", san_boot=True)
SAN_HOST = replace(
    HOST, profile="san", san=SanTarget(ROOT, address="192.168.78.50/24", gateway="192.168.78.254")
)
SAN_INSTALLED = replace(SAN_HOST, netboot_armed=False, state=State.INSTALLED, token=None)


def test_golden_san_install() -> None:
    check_golden("ipxe-san-install.txt", render.ipxe_script(SAN_HOST, SAN_PROFILE, SETTINGS))


def test_golden_san_local() -> None:
    check_golden("ipxe-san-local.txt", render.ipxe_script(SAN_INSTALLED, SAN_PROFILE, SETTINGS))


def test_the_install_hooks_the_lun_after_opening_the_storage_nic() -> None:
    lines = render.ipxe_script(SAN_HOST, SAN_PROFILE, SETTINGS).splitlines()
    opened = lines.index("ifopen net1")
    hooked = next(i for i, line in enumerate(lines) if line.startswith("sanhook "))
    assert lines[hooked].startswith(f"sanhook --drive 0x80 {ROOT} || echo ")  # boots anyway
    assert lines.index("set net1/ip 192.168.78.50") < opened < hooked
    assert lines.index("set initiator-iqn iqn.2026-12.invalid.netinstall:525400abcdef") < hooked
    assert hooked < next(i for i, line in enumerate(lines) if line.startswith("kernel "))
    assert not any(line.startswith("sanboot") for line in lines)


def test_the_installer_gets_use_ibft_once() -> None:
    module = next(
        line
        for line in render.ipxe_script(SAN_HOST, SAN_PROFILE, SETTINGS).splitlines()
        if line.startswith("module ") and "vmlinuz" in line
    )
    assert module.split().count("use_ibft") == 1
    already = replace(SAN_PROFILE, kernel_args=PROFILE.kernel_args + " use_ibft", multipath=True)
    words = render.installer_args(SAN_HOST, already, SETTINGS, "01-52-54-00-ab-cd-ef")
    assert words.count("use_ibft") == 1
    assert "device_mapper_multipath=yes" in words
    args = parse_multiboot(f"xen.gz --- vmlinuz {' '.join(words)} --- install.img").args
    assert args.use_ibft
    assert args.device_mapper_multipath


def test_an_installed_san_host_sanboots_its_lun_with_dhcp_on_the_storage_nic() -> None:
    host = replace(SAN_INSTALLED, san=SanTarget(ROOT, initiator="iqn.2026-12.org.example:h1"))
    text = render.ipxe_script(host, SAN_PROFILE, SETTINGS)
    lines = text.splitlines()
    assert lines.index("dhcp net1") < lines.index(f"sanboot --drive 0x80 {ROOT}")
    assert "set initiator-iqn iqn.2026-12.org.example:h1" in lines
    assert "exit" not in lines
    assert "kernel" not in text


def test_san_hosts_of_a_seed_profile_get_the_ipxe_script_from_their_rom() -> None:
    facts = ClientFacts(mac=HOST.mac, arch=0, ipxe=True)
    assert boot_file(facts, SAN_HOST, SAN_PROFILE) == f"ipxe/{HOST.mac}"
    assert boot_file(facts, HOST, PROFILE) == "pxelinux.0"


@pytest.mark.parametrize(
    ("san", "words"),
    [
        (SanTarget("iscsi:192.168.78.1::3260:1"), "RFC 4173"),
        (SanTarget("nfs://x/y"), "is not an RFC 4173 root path"),
        (SanTarget("iscsi:storage.example::3260:1:iqn.2026-12.org.x:y"), "must be an IPv4"),
        (SanTarget("iscsi:192.168.78.1::3260:1:lun-one"), "is not an iqn. or eui. name"),
        (SanTarget(ROOT, address="192.168.78.50"), "must be IPv4 ADDRESS/PREFIX"),
        (SanTarget(ROOT, gateway="gw"), "storage gateway 'gw'"),
        (SanTarget(ROOT, initiator="host 1"), "initiator 'host 1'"),
    ],
)
def test_bad_san_settings_are_named(san: SanTarget, words: str) -> None:
    with pytest.raises(InputError, match=words):
        san_target(san)


def test_a_san_profile_host_needs_its_lun(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as registry:
        registry.add_profile(SAN_PROFILE)
        with pytest.raises(InputError, match="boots from a SAN; give the host its root LUN"):
            registry.add_host(HOST.mac, profile="san")
        assert registry.get_host(HOST.mac) is None
        added = registry.add_host(HOST.mac, profile="san", san=SAN_HOST.san)
        assert registry.get_host(HOST.mac) == added
        stored = registry.get_host(HOST.mac)
        assert stored is not None
        assert stored.san == SAN_HOST.san
        assert registry.get_profile("san") == SAN_PROFILE
        with pytest.raises(InputError, match="boots from a SAN"):
            registry.update_host(HOST.mac, san=None)


def test_uefi_san_installs_boot_xen_as_an_efi_application_with_its_xen_cfg() -> None:
    script = render.ipxe_script(SAN_HOST, SAN_PROFILE, SETTINGS)
    uefi = script.split(":uefi", 1)[1]
    assert "kernel http://192.168.77.1:8080/boot/xen.efi" in uefi
    assert f"initrd --name xen.cfg {BASE}/config/xen-efi/{HOST.mac}.cfg" in uefi
    assert "grubx64.efi" not in uefi
    found = render.config_for_path(
        f"xen-efi/{HOST.mac}.cfg", lambda _mac: (SAN_HOST, SAN_PROFILE), SETTINGS
    )
    assert found is not None
    text, mac = found.text, found.mac
    assert mac == HOST.mac
    lines = text.splitlines()
    assert "[netinstall]" in lines
    assert "ramdisk=install.img" in lines
    kernel = next(line for line in lines if line.startswith("kernel="))
    assert kernel.startswith("kernel=vmlinuz ")
    assert " use_ibft " in kernel
    plain = render.ipxe_script(HOST, PROFILE, SETTINGS).split(":uefi", 1)[1]
    assert "grubx64.efi" in plain  # hosts without a SAN keep GRUB


ROOT_B = "iscsi:192.168.78.2::3260:1:iqn.2026-12.org.netinstall:lab01"
SAN_MULTIPATH_PROFILE = replace(SAN_PROFILE, multipath=True)
TWO_PATHS = replace(SAN_HOST.san, paths=(ROOT_B,))  # type: ignore[type-var]


def test_a_lun_over_two_portals_is_hooked_and_booted_over_both() -> None:
    host = replace(SAN_HOST, san=TWO_PATHS)
    install = render.ipxe_script(host, SAN_MULTIPATH_PROFILE, SETTINGS).splitlines()
    assert any(line.startswith(f"sanhook --drive 0x80 {ROOT} {ROOT_B} || ") for line in install)
    local = replace(host, netboot_armed=False, state=State.INSTALLED, token=None)
    lines = render.ipxe_script(local, SAN_MULTIPATH_PROFILE, SETTINGS).splitlines()
    assert f"sanboot --drive 0x80 {ROOT} {ROOT_B}" in lines


@pytest.mark.parametrize(
    ("paths", "words"),
    [
        (("iscsi:192.168.78.2::3260:2:iqn.2026-12.org.netinstall:lab01",), "names LUN 2 of"),
        (("iscsi:192.168.78.2::3260:1:iqn.2026-12.org.netinstall:other",), "every path must"),
        ((ROOT,), "repeats the portal 192.168.78.1:3260"),
        ((ROOT_B, ROOT_B), "repeats the portal 192.168.78.2:3260"),
        (("iscsi:192.168.78.2::3260:1",), "RFC 4173"),
        (tuple(ROOT_B.replace(".2:", f".{n}:") for n in range(2, 6)), "at most 4 paths"),
    ],
)
def test_bad_further_paths_are_named(paths: tuple[str, ...], words: str) -> None:
    with pytest.raises(InputError, match=words):
        san_target(replace(TWO_PATHS, paths=paths))


def test_several_paths_need_a_multipath_profile(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as registry:
        registry.add_profile(SAN_PROFILE)
        with pytest.raises(InputError, match="its root LUN has 2 paths, but profile 'san' has no"):
            registry.add_host(HOST.mac, profile="san", san=TWO_PATHS)
        registry.update_profile(SAN_MULTIPATH_PROFILE)
        added = registry.add_host(HOST.mac, profile="san", san=TWO_PATHS)
        stored = registry.get_host(HOST.mac)
        assert stored is not None
        assert stored.san == added.san == TWO_PATHS  # the paths survive the JSON column
        with pytest.raises(InputError, match="has no multipath"):
            registry.update_profile(SAN_PROFILE)  # would strand the host's second path
        assert registry.get_profile("san") == SAN_MULTIPATH_PROFILE


def test_a_profile_update_to_san_boot_needs_every_host_s_lun(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as registry:
        registry.add_profile(replace(SAN_PROFILE, san_boot=False))
        registry.add_host(HOST.mac, profile="san")
        with pytest.raises(InputError, match=f"host {HOST.mac}: profile 'san' boots from a SAN"):
            registry.update_profile(SAN_PROFILE)
        found = registry.get_profile("san")
        assert found is not None
        assert not found.san_boot
