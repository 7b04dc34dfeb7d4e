"""The HTTP server's pure parts: path confinement, log redaction, the API's host view."""

from __future__ import annotations

from pathlib import Path

import pytest

from netinstall.errors import InputError
from pxe_server.http import loggable
from pxe_server.http_api import host_json, log_dir
from pxe_server.http_files import safe_path
from pxe_server.model import Host
from pxe_server.server import advertised_address

ANY = "0.0.0.0"  # noqa: S104 - the wildcard address, never bound here


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "boot").mkdir(parents=True)
    (tmp_path / "root" / "boot" / "xen.gz").write_bytes(b"x")
    (tmp_path / "secret").write_text("no")
    (tmp_path / "root" / "out").symlink_to(tmp_path / "secret")
    (tmp_path / "root" / "in").symlink_to("boot/xen.gz")
    return tmp_path / "root"


def test_safe_path_keeps_names_inside_the_root(root: Path) -> None:
    real = root.resolve()
    assert safe_path(root, "boot/xen.gz") == real / "boot" / "xen.gz"
    assert safe_path(root, "./boot//xen.gz") == real / "boot" / "xen.gz"
    assert safe_path(root, "in") == real / "boot" / "xen.gz"
    assert safe_path(root, "missing") == real / "missing"


@pytest.mark.parametrize(
    "name",
    ["../secret", "boot/../../secret", "/etc/passwd", "boot/xen.gz\0", "..\\secret", "out", ".."],
)
def test_safe_path_refuses_escapes(root: Path, name: str) -> None:
    assert safe_path(root, name) is None


def test_missing_root_refuses_everything(tmp_path: Path) -> None:
    assert safe_path(tmp_path / "nothing", "a") is None


def test_request_log_redacts_tokens() -> None:
    assert loggable("/answerfile/aa?token=s3cr3t") == "/answerfile/aa?token=REDACTED"
    assert loggable("/x?a=1&TOKEN=s3cr3t&b=2") == "/x?a=1&TOKEN=REDACTED&b=2"
    assert loggable("/x?netinstall.token=abc") == "/x?netinstall.token=REDACTED"
    assert loggable("/boot/pxelinux.0") == "/boot/pxelinux.0"


def test_host_json_has_no_secrets() -> None:
    host = Host(
        mac="52:54:00:12:34:56", variables=(("disk", "vda"),), token="t0k", agent_credential="cr3d"
    )
    shown = host_json(host)
    assert "t0k" not in repr(shown)
    assert "cr3d" not in repr(shown)
    assert shown["variables"] == {"disk": "vda"}
    assert shown["state"] == "pending"


def test_log_dir_uses_dashes(tmp_path: Path) -> None:
    assert log_dir(tmp_path, "52:54:00:12:34:56") == tmp_path / "logs" / "52-54-00-12-34-56"


def test_advertised_address() -> None:
    assert advertised_address(ANY, None, "192.0.2.1") == "192.0.2.1"
    assert advertised_address("192.0.2.5", None, None) == "192.0.2.5"
    with pytest.raises(InputError, match="advertise"):
        advertised_address(ANY, None, None)
    assert advertised_address(ANY, "lo", None) == "127.0.0.1"


def test_interface_ra_prefix_reads_global_64s(tmp_path: Path) -> None:
    from pxe_server.server import interface_ra_prefix

    table = tmp_path / "if_inet6"
    table.write_text(
        "fe800000000000000000000000000001 03 40 20 80 br0\n"
        "fd770000000000000000000000000001 03 40 00 80 br0\n"
        "20010db8000000000000000000000001 04 40 00 80 eth0\n"
    )
    assert interface_ra_prefix("br0", table) == "fd77::"
    assert interface_ra_prefix("eth0", table) == "2001:db8::"
    assert interface_ra_prefix("lo", table) is None
    assert interface_ra_prefix("br0", tmp_path / "missing") is None
