"""The lab tests' shared parts: ``built`` (the images, built when out of date) and
``run_scenario`` (one lab run, its phase table kept). The tables are printed once
more at the end of the session, so a CI log (pytest -q, output captured) shows
how long each phase took."""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path
from typing import Literal

import pytest
from _pytest.terminal import TerminalReporter

from netinstall.lab import console, netns
from netinstall.lab.demo import LabOptions, LabResult, run_lab
from netinstall.lab.qemu import Firmware
from netinstall.lab.scenario import Scenario
from tests.conftest import REPO

REPORTS: list[str] = []  # appended by run_scenario: a title line, then the phase table


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not REPORTS:
        return
    terminalreporter.section("lab phase tables")
    for report in REPORTS:
        terminalreporter.write_line(report)
        terminalreporter.write_line("")


OUT = REPO / "build"
CACHE = Path.home() / ".cache" / "netinstall"
FIRMWARES = ["bios", "uefi"]
SERVER = ipaddress.IPv4Interface(netns.LabNetwork(namespace=netns.PREFIX + "0").address)


@pytest.fixture(scope="session")
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


def run_scenario(
    built: Path,
    firmware: Firmware,
    until: str,
    timeout: float,
    keep: Path,
    *,
    scenario: Scenario,
    network: Literal["netns", "user"] = "netns",
    upgrade_repo: Path | None = None,
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
        upgrade_repo=upgrade_repo,
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
