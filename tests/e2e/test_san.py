"""SAN boot end to end (netinstall/lab/san.py): a diskless machine with a storage NIC.

``test_install_and_boot_from_an_iscsi_lun``: the host's iPXE script opens the storage
NIC and sanhooks its LUN on the lab's tgtd, so the installer finds the iBFT
(use_ibft), logs in and installs onto the LUN; after the install the script
sanboots it, Xen and dom0 boot from the SAN (dom0 logs in from the iBFT in its
initramfs) and the installed system reports running. BIOS in make test; UEFI (iPXE EFI
loaded first, Xen as an EFI application for the installer) in make test-all.
``test_use_ibft_without_an_ibft_fails_cleanly`` and ``test_a_refused_login_fails_cleanly``
(the target turns the installer away once it is up): the short runs for the clear errors.
``test_install_onto_a_multipathed_lun``: one LUN behind two SCSI paths; the installer
(device_mapper_multipath=yes) installs onto the map, dom0 boots from it, then the lab
removes a path on the QEMU monitor: the host keeps writing and reports the lost path
then reboots on the one path left (UEFI in make test; BIOS, where GRUB for i386-pc goes
onto the map, in make test-all). ``test_install_onto_an_iscsi_lun_over_two_portals``: the
iscsi machine with its LUN behind two portals of the target, multipathed by the installer
and dom0 over the iBFT's two targets; a portal goes away while it runs (make test-all).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.firmware import Firmware
from netinstall.lab import console, san
from netinstall.lab.qemu import MAC_SUFFIX
from netinstall.lab.scenario import ISCSI, ISCSI_MULTIPATH, ISCSI_REFUSED, MULTIPATH, NO_IBFT
from tests.e2e.conftest import run_scenario

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("firmware", ["bios", pytest.param("uefi", marks=pytest.mark.slow)])
def test_install_and_boot_from_an_iscsi_lun(
    built: Path, firmware: Firmware, tmp_path: Path
) -> None:
    result = run_scenario(built, firmware, console.RUNNING, 1800, tmp_path, scenario=ISCSI)
    reached = result.tracker.reached
    assert reached["step iscsi"] < reached["step network"]
    assert reached[console.REBOOT] <= reached[console.XEN_DISK] <= reached[console.SAN_LOGIN]
    assert reached[console.SAN_LOGIN] <= reached[console.RUNNING]
    checked = "\n".join(result.checks)
    assert "booted Xen from its iSCSI LUN" in checked
    assert "root UUID" in checked  # read back from the LUN's backing image
    serial = (tmp_path / "serial.log").read_text(errors="replace")
    mac = san.storage_mac(MAC_SUFFIX[firmware])
    assert f"storage NIC eth1 ({mac}): 192.168.78.50/24" in serial


@pytest.mark.timeout(600)
def test_use_ibft_without_an_ibft_fails_cleanly(built: Path, tmp_path: Path) -> None:
    result = run_scenario(built, "bios", console.FAILED, 400, tmp_path, scenario=NO_IBFT)
    assert "step iscsi" in result.tracker.reached
    assert any(check.startswith("disk untouched") for check in result.checks), result.checks


@pytest.mark.timeout(600)
def test_a_refused_login_fails_cleanly(built: Path, tmp_path: Path) -> None:
    result = run_scenario(built, "bios", console.FAILED, 400, tmp_path, scenario=ISCSI_REFUSED)
    reached = result.tracker.reached
    assert reached["target refuses the host"] <= reached["step iscsi"] <= reached[console.FAILED]
    assert any("failed: iscsistart" in check for check in result.checks), result.checks
    assert any(check.startswith("disk untouched") for check in result.checks), result.checks


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("firmware", ["uefi", pytest.param("bios", marks=pytest.mark.slow)])
def test_install_onto_a_multipathed_lun(built: Path, firmware: Firmware, tmp_path: Path) -> None:
    result = run_scenario(built, firmware, console.RUNNING, 1800, tmp_path, scenario=MULTIPATH)
    reached = result.tracker.reached
    assert reached["step multipath"] < reached["step network"]
    assert reached[console.RUNNING] < reached["path removed"] < reached["lost path reported"]
    checked = "\n".join(result.checks)
    assert "dom0's root map has two paths" in checked
    assert "a write on root synced" in checked
    assert "the host reported its paths" in checked
    assert reached["lost path reported"] < reached["reboot on one path"]
    assert reached["reboot on one path"] < reached["one path: checked in"]
    assert "rebooted on one path: root /dev/mapper/" in checked
    serial = (tmp_path / "serial.log").read_text(errors="replace")
    assert "is multipath map mpatha" in serial


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_install_onto_an_iscsi_lun_over_two_portals(
    built: Path, firmware: Firmware, tmp_path: Path
) -> None:
    result = run_scenario(
        built, firmware, console.RUNNING, 1800, tmp_path, scenario=ISCSI_MULTIPATH
    )
    reached = result.tracker.reached
    assert reached["step iscsi"] < reached["step multipath"] < reached["step network"]
    assert reached[console.RUNNING] < reached["path removed"] < reached["lost path reported"]
    checked = "\n".join(result.checks)
    assert "dom0's root map has two paths" in checked
    assert "iSCSI portal 192.168.78.2 taken off the storage network" in checked
    assert "a write on root synced" in checked
    assert reached["lost path reported"] < reached["reboot on one path"]
    assert "rebooted on one path: root /dev/mapper/" in checked
    serial = (tmp_path / "serial.log").read_text(errors="replace")
    assert "(first of 2 paths)" in serial  # the installer logged in over both
    assert "over sda, sdb" in serial  # and its map holds both
