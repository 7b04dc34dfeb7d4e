"""Power cuts end to end (netinstall/lab/powercut.py): the plug pulled at one install step,
the machine powered on again with nothing else touched; it must reach ``running`` on its
own, never booting a half-installed disk, with the facts of a whole install.

make test cuts during extract, in the UEFI install (test_network_boot); these are the other
cut points (test-all). The BIOS machines install the legacy DOS layout (disable-gpt) on a
16 GiB disk, so that layout is installed and booted end to end too."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.firmware import Firmware
from netinstall.lab import console
from netinstall.lab.scenario import power_cut
from tests.e2e.conftest import run_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(4200)
@pytest.mark.parametrize(
    ("firmware", "cut"),
    [
        ("bios", "before-partition"),
        ("uefi", "download"),
        ("bios", "bootloader"),
        ("uefi", "bootloader"),
        ("bios", "first-boot"),
    ],
)
def test_a_power_cut_then_running_untouched(
    built: Path, firmware: Firmware, cut: str, tmp_path: Path
) -> None:
    scenario = power_cut(cut, dos=firmware == "bios")
    result = run_scenario(built, firmware, console.RUNNING, 1800, tmp_path, scenario=scenario)
    checked = "\n".join(result.checks)
    assert f"power cut {cut}: running" in checked
    if cut == "first-boot":
        assert "first boot finished with the SR it had begun" in checked
    else:
        assert "never its half-installed disk" in checked
    if scenario.dos:
        assert "DOS layout: root 4 GiB (83), backup 4 GiB (83)" in checked
    assert (tmp_path / "serial-before-cut.log").is_file()
