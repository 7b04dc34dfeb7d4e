"""The lab end to end: a QEMU machine network-boots from our server in a namespace.

``test_a_bad_answer_file_fails_cleanly`` (the short run): DHCP from our dnsmasq,
pxelinux (BIOS) or GRUB (UEFI) from our TFTP server, Xen + the installer dom0,
which reports failed with the answer file's mistake and never writes the disk.
``test_install_and_boot_from_disk``: the whole flow, until the installed system
reports ``running`` after its reboot with facts that match the disk; between them
the two firmwares' scenarios (netinstall/lab/scenario.py) prove a static admin
address, both SR types, a script at each stage and a supplemental pack.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path
from typing import Literal

import pytest

from netinstall.lab import console, netns
from netinstall.lab.demo import LabOptions, LabResult, run_lab
from netinstall.lab.qemu import Firmware
from netinstall.lab.scenario import BAD_ANSWER_FILE, LOW_MEMORY, SCENARIOS, Scenario
from tests.conftest import REPO
from tests.e2e.conftest import REPORTS

pytestmark = pytest.mark.e2e

OUT = REPO / "build"
CACHE = Path.home() / ".cache" / "netinstall"
FIRMWARES = ["bios", "uefi"]
SERVER = ipaddress.IPv4Interface(netns.LabNetwork(namespace=netns.PREFIX + "0").address)


@pytest.fixture(scope="module")
def built() -> Path:
    """``build/`` with the installer, repository and netboot tree, built when out of date."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (images, network namespaces, a tap device)")
    for tool in ("qemu-system-x86_64", "ip", "dnsmasq"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing (scripts/host-packages.txt)")
    from images.build import build

    build(out=OUT, cache=CACHE)
    return OUT


def _lab(
    built: Path,
    firmware: Firmware,
    until: str,
    timeout: float,
    keep: Path,
    *,
    scenario: Scenario,
    network: Literal["netns", "user"] = "netns",
) -> LabResult:
    options = LabOptions(
        firmware=firmware,
        repo=built / "repo",
        netboot=built / "netboot",
        until=until,
        timeout=timeout,
        keep=keep,
        scenario=scenario,
        network=network,
    )
    result = run_lab(options)
    report = "\n".join([
        f"{firmware} ({scenario.name}, {network}): {'ok' if result.ok else result.reason}",
        console.phase_table(result.tracker.reached),
        *(f"checked: {check}" for check in result.checks),
    ])  # fmt: skip
    print(f"\n{report}")
    REPORTS.append(report)
    if network == "netns":  # other runs may have namespaces of their own meanwhile
        assert result.namespace is not None
        assert result.namespace not in netns.namespaces(), f"{result.namespace} left behind"
    tail = "\n".join(result.console_tail)
    assert result.ok, f"{firmware}: {result.reason}\n{tail}"
    return result


@pytest.mark.timeout(600)
@pytest.mark.parametrize("firmware", FIRMWARES)
def test_a_bad_answer_file_fails_cleanly(built: Path, firmware: Firmware, tmp_path: Path) -> None:
    result = _lab(built, firmware, console.FAILED, 400, tmp_path, scenario=BAD_ANSWER_FILE)
    reached = result.tracker.reached
    order = [console.NETWORK_BOOT, console.XEN_NETWORK, console.INSTALLER_UP, console.FAILED]
    assert all(name in reached for name in order), reached
    assert [reached[name] for name in order] == sorted(reached[name] for name in order)
    assert any(check.startswith("disk untouched") for check in result.checks), result.checks
    dhcp = (tmp_path / "server.log").read_text(errors="replace")
    boot_file = "pxelinux.0" if firmware == "bios" else "grubx64.efi"
    assert f"tags: {'bios' if firmware == 'bios' else 'efi64'}" in dhcp
    assert boot_file in dhcp


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("firmware", FIRMWARES)
def test_install_and_boot_from_disk(built: Path, firmware: Firmware, tmp_path: Path) -> None:
    scenario = SCENARIOS[firmware]
    result = _lab(built, firmware, console.RUNNING, 1800, tmp_path, scenario=scenario)
    reached = result.tracker.reached
    # Milestones seen in the same poll share a timestamp: the order is what counts.
    assert reached[console.INSTALLED] <= reached[console.REBOOT] <= reached[console.XEN_DISK]
    assert reached[console.XEN_DISK] <= reached[console.RUNNING]
    checked = "\n".join(result.checks)
    assert "payload version" in checked
    assert f"SR {scenario.srtype} uuid" in checked
    if scenario.static_host is not None:
        assert f"static admin address {scenario.static_address(SERVER)}" in checked
    if scenario.scripts:
        assert "script markers on the console" in checked
    if scenario.pack:
        assert "var/lib/netinstall/packs/example.installed" in checked


@pytest.mark.slow  # make test-all: the fallback, not the real chain
@pytest.mark.timeout(2400)
def test_user_mode_fallback_installs_and_boots(built: Path, tmp_path: Path) -> None:
    scenario = SCENARIOS["uefi"]
    result = _lab(built, "uefi", console.RUNNING, 1800, tmp_path, scenario=scenario, network="user")
    assert "payload version" in "\n".join(result.checks)
    assert (tmp_path / "tftp" / "grub" / "grub.cfg-01-52-54-00-77-00-02").is_file()


@pytest.mark.slow  # make test-all: a third full install
@pytest.mark.timeout(2400)
def test_a_payload_too_big_for_ram_is_staged_on_disk(built: Path, tmp_path: Path) -> None:
    result = _lab(built, "uefi", console.RUNNING, 1800, tmp_path, scenario=LOW_MEMORY)
    assert "the installer said 'staging the payload on the backup partition'" in result.checks
