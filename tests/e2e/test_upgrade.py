"""The upgrade scenario end to end (netinstall/lab/upgrade.py): install A, upgrade to B
through the dom0 agent, restore A; the SR marker and the changed host name survive,
the backup partition holds A, and the utility partition the lab put first on the disk
is kept byte for byte throughout. UEFI in make test; BIOS (slower under TCG) in test-all."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.firmware import Firmware
from hypervisor_payload.treeinfo import parse_treeinfo
from netinstall.lab import console
from netinstall.lab.scenario import UPGRADE
from netinstall.lab.upgrade import build_target
from tests.e2e.conftest import CACHE, run_scenario

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(5400)
@pytest.mark.parametrize("firmware", ["uefi", pytest.param("bios", marks=pytest.mark.slow)])
def test_upgrade_then_restore(built: Path, firmware: Firmware, tmp_path: Path) -> None:
    start = parse_treeinfo((built / "repo" / ".treeinfo").read_text("utf-8")).version
    target = build_target(built, CACHE, start)
    result = run_scenario(
        built, firmware, console.RUNNING, 1800, tmp_path, scenario=UPGRADE, upgrade_repo=target
    )
    reached = result.tracker.reached
    assert reached["upgrade: running"] < reached["restore: running"]
    checked = "\n".join(result.checks)
    assert "after the upgrade: release" in checked
    assert "after the restore: release" in checked
    assert f"the backup partition holds {start}" in checked
    # The disk's first partition is a vendor utility partition (lab/utility.py): the same
    # bytes after the install, the upgrade and the restore (from dom0), and in the image.
    for when in (f"after installing {start}", "after the upgrade", "after the restore"):
        assert f"{when}: utility partition /dev/vda1 byte for byte as written" in checked
    assert "at the end: utility partition 1 byte for byte as written" in checked
