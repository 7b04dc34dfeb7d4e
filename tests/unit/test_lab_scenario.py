"""The lab's scenarios: their answer files render and validate as the server would serve them."""

from __future__ import annotations

import ipaddress

import pytest

import answerfile
from answerfile.model import Proto, ScriptStage
from common.errors import InputError
from netinstall.lab.scenario import (
    BAD_ANSWER_FILE,
    FILES,
    PROFILE,
    SCENARIOS,
    Scenario,
    scenario_for,
)
from pxe_server import render
from pxe_server.model import Host, Profile, ServerSettings

SERVER = ipaddress.IPv4Interface("192.168.77.1/24")
SETTINGS = ServerSettings(http_base="http://192.168.77.1:8080", tftp_address="192.168.77.1")
MAC = "52:54:00:12:34:56"


def served(scenario: Scenario) -> str:
    """The answer file our server renders (and validates) for the lab host."""
    profile = Profile(name=PROFILE, template=(FILES / "profile.xml.j2").read_text("utf-8"))
    host = Host(
        mac=MAC, name="lab01", profile=PROFILE, variables=tuple(scenario.variables(SERVER).items())
    )
    return render.answer_file(host, profile, SETTINGS, f"{SETTINGS.http_base}/repo/")


def test_the_two_full_runs_cover_what_issue_6_asks() -> None:
    runs = list(SCENARIOS.values())
    assert {s.static_host is not None for s in runs} == {True, False}
    assert {s.srtype for s in runs} == {"lvm", "ext"}
    assert all(s.scripts for s in runs)
    assert any(s.pack for s in runs)


@pytest.mark.parametrize("firmware", sorted(SCENARIOS))
def test_each_scenario_renders_a_valid_answer_file(firmware: str) -> None:
    scenario = SCENARIOS[firmware]
    model = answerfile.parse(served(scenario)).model
    assert model.sr_type.value == scenario.srtype
    assert [s.stage for s in model.scripts] == list(ScriptStage)
    interface = model.admin_interface
    assert interface is not None
    if scenario.static_host:
        assert interface.proto is Proto.STATIC
        assert interface.ipaddr == scenario.static_address(SERVER) == "192.168.77.50"
        assert interface.gateway == "192.168.77.1"
    else:
        assert interface.proto is Proto.DHCP
    sources = [s.location for s in model.driver_sources]
    assert sources == (["http://192.168.77.1:8080/files/drivers/"] if scenario.pack else [])


def test_the_bad_scenario_is_refused_with_the_expected_message() -> None:
    with pytest.raises(InputError) as caught:
        served(BAD_ANSWER_FILE)
    assert BAD_ANSWER_FILE.expect_failure is not None
    assert BAD_ANSWER_FILE.expect_failure in str(caught.value)


def test_a_static_address_outside_the_lab_network_is_refused() -> None:
    with pytest.raises(InputError, match=r"host 300 of 192\.168\.77\.0/24"):
        Scenario("odd", static_host=300).variables(SERVER)
    with pytest.raises(InputError, match=r"host 1 of"):
        Scenario("odd", static_host=1).variables(SERVER)  # the server's own address
    user = ipaddress.IPv4Interface("10.0.2.2/24")
    assert Scenario("user", static_host=50).static_address(user) == "10.0.2.50"


def test_scenario_names() -> None:
    assert scenario_for("bios", "install") is SCENARIOS["bios"]
    assert scenario_for("uefi", "bad-answer-file") is BAD_ANSWER_FILE
    assert scenario_for("bios", "low-memory").installer_xen_args is not None
    assert scenario_for("uefi", "upgrade").upgrade
    assert scenario_for("bios", "iscsi").san
    assert scenario_for("bios", "iscsi").variables(SERVER)["disk"] == "iscsi:ibft"
    with pytest.raises(InputError, match="unknown scenario 'fcoe'"):
        scenario_for("uefi", "fcoe")


def test_upgrade_target_version_and_sr_markers() -> None:
    from netinstall.lab.upgrade import next_version, sr_marker_commands

    assert next_version("0.1.0") == "0.2.0"
    assert next_version("1.9") == "1.10"
    assert next_version("nightly") == "nightly.1"
    write, read = sr_marker_commands("ext", "u-1", "tok")
    assert write == "echo tok > /var/run/sr-mount/u-1/netinstall-lab-marker && sync"
    assert read == "cat /var/run/sr-mount/u-1/netinstall-lab-marker"
    write, read = sr_marker_commands("lvm", "u-1", "tok")
    assert "lvcreate --yes -L 4M -n netinstall-lab-marker VG_XenStorage-u-1" in write
    assert read.endswith("head -n 1 /dev/VG_XenStorage-u-1/netinstall-lab-marker")


def test_the_demo_offers_every_scenario() -> None:
    from netinstall.cli_demo import SCENARIO_NAMES
    from netinstall.lab.scenario import NAMES

    assert SCENARIO_NAMES == NAMES
