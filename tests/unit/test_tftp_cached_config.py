"""What TFTP's loop answers itself (`boot_config_cached`, the server's resolve_now): a
config the render cache holds at its host's revision and whose serving writes nothing;
everything else goes on to `boot_config` on the opener thread."""

from __future__ import annotations

from pathlib import Path

from pxe_server.admission import UnknownGate, UnknownLimits
from pxe_server.http import boot_config, boot_config_cached
from pxe_server.model import ServerSettings, State
from pxe_server.registry import Registry

MAC = "52:54:00:12:34:56"
SETTINGS = ServerSettings(http_base="http://192.168.77.1:8080", tftp_address="192.168.77.1")
PATH = "pxelinux.cfg/01-52-54-00-12-34-56"


def rendered(reg: Registry) -> str:
    text = boot_config(reg, PATH, SETTINGS, UnknownGate(UnknownLimits()))
    assert text is not None
    return text


def test_nothing_is_answered_before_it_was_rendered(reg: Registry) -> None:
    reg.add_host(MAC)
    reg.record_event(MAC, State.INSTALLED)
    assert boot_config_cached(reg, PATH, SETTINGS) is None
    assert boot_config_cached(reg, "pxelinux.0", SETTINGS) is None  # no config at all


def test_a_local_config_is_answered_from_the_cache(reg: Registry) -> None:
    reg.add_host(MAC)
    reg.record_event(MAC, State.INSTALLED)
    local = rendered(reg)
    assert "localboot" in local
    assert boot_config_cached(reg, PATH, SETTINGS) == local
    assert boot_config_cached(reg, "/" + PATH, SETTINGS) == local  # as TFTP names it
    assert boot_config_cached(reg, PATH, SETTINGS, via="http") is None  # cached per via


def test_an_install_config_is_never_answered_its_fetch_signals_the_host(reg: Registry) -> None:
    reg.add_host(MAC)
    assert "netinstall.token=" in rendered(reg)
    assert "netinstall.token=" in rendered(reg)  # cached now
    assert boot_config_cached(reg, PATH, SETTINGS) is None


def test_a_host_changed_by_another_connection_is_not_answered_its_old_config(
    reg: Registry, tmp_path: Path
) -> None:
    """The unwanted reinstall the other way round: a cached local config after a rearm."""
    reg.add_host(MAC)
    reg.record_event(MAC, State.INSTALLED)
    assert boot_config_cached(reg, PATH, SETTINGS) is None
    rendered(reg)
    assert boot_config_cached(reg, PATH, SETTINGS) is not None
    with Registry.open(tmp_path) as other:  # the CLI, the lab, another server
        other.rearm(MAC)
    assert boot_config_cached(reg, PATH, SETTINGS) is None
    assert "netinstall.token=" in rendered(reg)
