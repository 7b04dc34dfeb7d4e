"""The lab tests' shared parts: ``built`` (the images, built when out of date) and
``run_scenario`` (one lab run, its phase table kept). The tables are printed once
more at the end of the session, so a CI log (pytest -q, output captured) shows
how long each phase took."""

from __future__ import annotations

import ipaddress
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from _pytest.terminal import TerminalReporter

from common.firmware import Firmware
from netinstall.lab import console, netns
from netinstall.lab.demo import LabOptions, LabResult, run_lab
from netinstall.lab.scenario import Scenario
from tests.conftest import REPO

REPORTS: list[str] = []  # appended by run_scenario: a title line, then the phase table
TABLES: list[str] = []  # every test's REPORTS, gathered where the terminal summary is written
TABLE_PROPERTY = "lab phase table"


@pytest.fixture(autouse=True)
def _phase_tables(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test's phase tables ride on its report, so they reach the controller under xdist."""
    before = len(REPORTS)
    yield
    request.node.user_properties += [(TABLE_PROPERTY, r) for r in REPORTS[before:]]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        TABLES.extend(
            str(value) for name, value in report.user_properties if name == TABLE_PROPERTY
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first (by the time limit each test gives itself): with ``-n 2`` the long
    upgrade and installs start at once, and the short runs fill in at the end."""
    items.sort(key=lambda item: -_time_limit(item))


def _time_limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    return float(marker.args[0]) if marker is not None and marker.args else 0.0


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not TABLES:
        return
    terminalreporter.section("lab phase tables")
    for table in TABLES:
        terminalreporter.write_line(table)
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
    from netinstall.build import build

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
    console_port: int | None = None,
    before_teardown: Callable[[], None] | None = None,
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
        console_port=console_port,
        before_teardown=before_teardown,
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
