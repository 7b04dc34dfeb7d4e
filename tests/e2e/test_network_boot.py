"""The lab end to end: a QEMU machine network-boots from our server in a namespace.

``test_a_bad_answer_file_fails_cleanly`` (the short run): DHCP from our dnsmasq,
pxelinux (BIOS) or GRUB (UEFI) from our TFTP server, Xen + the installer dom0,
which reports failed with the answer file's mistake and never writes the disk.
``test_install_and_boot_from_disk``: the whole flow, until the installed system
reports ``running`` after its reboot with facts that match the disk; between them
the two firmwares' scenarios (netinstall/lab/scenario.py) prove a static admin
address, both SR types, a script at each stage and a supplemental pack. The UEFI one
also has its power cut during extract (``scenario.CI_CUT``, lab/powercut.py): make test's
one power cut; the other cut points are tests/e2e/test_power_cut.py (test-all).
Both start with the machine off and no QEMU started by the lab: each has a BMC of the
lab's (lab/bmc.py; UEFI Redfish, BIOS IPMI) and ``netinstall host rearm MAC --power``
powers it on. The web console watches the UEFI install in a headless Chromium
(tests/e2e/console_watch.py): logged in, the fleet, the host's page following the
install live until running, screenshots under the test's tmp_path/screenshots.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from common.firmware import Firmware
from netinstall.lab import console, qemu
from netinstall.lab.bmc import free_port
from netinstall.lab.follow import POWERED_ON
from netinstall.lab.scenario import (
    BAD_ANSWER_FILE,
    CI_CUT,
    HOST_NAME,
    HTTP_BOOT,
    HTTP_BOOT_PROXY,
    LOW_MEMORY,
    SCENARIOS,
    TFTP_ONLY,
    Scenario,
)
from tests.e2e.conftest import FIRMWARES, REPORTS, SERVER, run_scenario
from tests.e2e.console_watch import ConsoleWatch, watched

BMCS = {"uefi": "redfish", "bios": "ipmi"}  # make test's installs, one BMC each

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)
@pytest.mark.parametrize("firmware", FIRMWARES)
def test_a_bad_answer_file_fails_cleanly(built: Path, firmware: Firmware, tmp_path: Path) -> None:
    result = run_scenario(built, firmware, console.FAILED, 400, tmp_path, scenario=BAD_ANSWER_FILE)
    reached = result.tracker.reached
    order = [console.NETWORK_BOOT, console.XEN_NETWORK, console.INSTALLER_UP, console.FAILED]
    assert all(name in reached for name in order), reached
    assert [reached[name] for name in order] == sorted(reached[name] for name in order)
    assert any(check.startswith("disk untouched") for check in result.checks), result.checks
    dhcp = (tmp_path / "server.log").read_text(errors="replace")
    boot_file = "pxelinux.0" if firmware == "bios" else "grubx64.efi"
    # dnsmasq's log-dhcp lists a request's tags in no fixed order ("tags: http-pxelinux,
    # bios, ipxe, br0"): QEMU's BIOS ROM is iPXE, so it is also told pxelinux.0 by URL.
    tags = [
        {tag.strip() for tag in line.split("tags:", 1)[1].split(",")}
        for line in dhcp.splitlines()
        if "dnsmasq-dhcp" in line and "tags:" in line
    ]
    expected = {"bios", "http-pxelinux"} if firmware == "bios" else {"efi64"}
    assert any(expected <= seen for seen in tags), tags
    assert boot_file in dhcp


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("firmware", FIRMWARES)
def test_install_and_boot_from_disk(built: Path, firmware: Firmware, tmp_path: Path) -> None:
    scenario = SCENARIOS[firmware]
    if firmware == "uefi":
        scenario = replace(scenario, name=f"{scenario.name}, power cut: {CI_CUT}", cut=CI_CUT)
    # Started off, powered on by `host rearm --power` through the machine's BMC alone.
    scenario = replace(scenario, name=f"{scenario.name}, {BMCS[firmware]} BMC", bmc=BMCS[firmware])
    watch = None
    if firmware == "uefi":  # the web console in a browser watches this install
        watch = ConsoleWatch(tmp_path, free_port(), qemu.lab_mac(firmware), HOST_NAME)
    try:
        result = run_scenario(
            built, firmware, console.RUNNING, 1800, tmp_path, scenario=scenario,
            console_port=watch.port if watch else None,
            before_teardown=watch.stop if watch else None,
        )  # fmt: skip
    finally:
        if watch is not None:
            watch.stop()
    if watch is not None:
        REPORTS.append(f"uefi: the web console showed {watched(watch.check())}")
    reached = result.tracker.reached

    # The first phase's milestones carry its name ("before the cut: ") in a run with a cut.
    def first(milestone: str) -> float:
        return min(at for name, at in reached.items() if name.endswith(milestone))

    assert first(POWERED_ON) <= first(console.NETWORK_BOOT)
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
    if scenario.cut is not None:
        assert f"power cut {scenario.cut}: running" in checked
        assert "never its half-installed disk" in checked
    assert f"powered on through its BMC ({BMCS[firmware]})" in checked
    check_transport(tmp_path / "server.log", "http")


# The server's request logs: HTTP "ADDR GET PATH STATUS ...", TFTP "tftp ADDR:PORT NAME: ...".
_BY_HTTP = re.compile(r" GET /boot/install\.img 200 ")
_BY_TFTP = re.compile(r"netinstall\.tftp: tftp \S+ /?install\.img: ")


def check_transport(server_log: Path, transport: str) -> None:
    """install.img came over ``transport`` only (README "Boot transport")."""
    text = server_log.read_text(errors="replace")
    by_http, by_tftp = bool(_BY_HTTP.search(text)), bool(_BY_TFTP.search(text))
    assert (by_http, by_tftp) == (transport == "http", transport == "tftp"), (by_http, by_tftp)


@pytest.mark.slow  # make test-all: the TFTP-only way (server run --boot-transport tftp)
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("firmware", FIRMWARES)
def test_tftp_only_transport_installs(built: Path, firmware: Firmware, tmp_path: Path) -> None:
    result = run_scenario(built, firmware, console.RUNNING, 1800, tmp_path, scenario=TFTP_ONLY)
    assert "payload version" in "\n".join(result.checks)
    check_transport(tmp_path / "server.log", "tftp")


@pytest.mark.slow  # make test-all: OVMF's HTTP boot, no TFTP at all
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("scenario", [HTTP_BOOT, HTTP_BOOT_PROXY], ids=["full", "proxy"])
def test_uefi_http_boot_installs_without_tftp(
    built: Path, tmp_path: Path, scenario: Scenario
) -> None:
    """Full DHCP, and proxy-DHCP beside the lab's site DHCP server (its lease, our proxy
    offer's URL: pxe_server.http_boot_proxy)."""
    result = run_scenario(built, "uefi", console.RUNNING, 1800, tmp_path, scenario=scenario)
    assert "payload version" in "\n".join(result.checks)
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert " GET /http-boot/grubx64.efi 200 " in log  # the loader by URL (vendor HTTPClient)
    assert not re.search(r"netinstall\.tftp: tftp [0-9.]+:[0-9]+ ", log)  # no TFTP transfer
    check_transport(tmp_path / "server.log", "http")
    if scenario.dhcp == "proxy":
        assert "HTTP Boot proxy: offered" in log
        site = (tmp_path / "site-dhcp.log").read_text(errors="replace")
        assert "DHCPACK(br0)" in site  # the address came from the site's server


@pytest.mark.slow  # make test-all: the fallback, not the real chain
@pytest.mark.timeout(2400)
def test_user_mode_fallback_installs_and_boots(built: Path, tmp_path: Path) -> None:
    scenario = SCENARIOS["uefi"]
    result = run_scenario(
        built, "uefi", console.RUNNING, 1800, tmp_path, scenario=scenario, network="user"
    )
    assert "payload version" in "\n".join(result.checks)
    assert (tmp_path / "tftp" / "grub" / "grub.cfg-01-52-54-00-77-00-02").is_file()


@pytest.mark.slow  # make test-all: a third full install
@pytest.mark.timeout(2400)
def test_a_payload_too_big_for_ram_is_staged_on_disk(built: Path, tmp_path: Path) -> None:
    result = run_scenario(built, "uefi", console.RUNNING, 1800, tmp_path, scenario=LOW_MEMORY)
    assert "the installer said 'staging the payload on the backup partition'" in result.checks
