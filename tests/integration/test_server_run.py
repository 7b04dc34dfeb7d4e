"""The whole server (TFTP + HTTP, DHCP off) on ephemeral loopback ports, on a registry made
with the real CLI: a host fetches its config over TFTP, is signalled, installs, boots locally."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import requests

from pxe_server.model import State
from pxe_server.registry import Registry
from pxe_server.server import Server
from tests.integration.conftest import netinstall

pytestmark = pytest.mark.integration

MAC = "52:54:00:12:34:56"
DASHES = "52-54-00-12-34-56"

ANY = "0.0.0.0"  # noqa: S104 - the wildcard address, never bound here


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    where = tmp_path / "server"
    netboot = tmp_path / "netboot"
    netboot.mkdir()
    (netboot / "pxelinux.0").write_bytes(b"\x7fpxelinux" * 1000)
    for argv in (
        ("server", "init", str(where), "--netboot", str(netboot), "--repo", str(tmp_path)),
        ("host", "add", MAC, "--dir", str(where), "--name", "xenhost01"),
    ):
        done = netinstall(*argv)
        assert done.returncode == 0, done.stderr
    return where


def tftp_get(port: int, name: str, out: Path) -> bytes:
    url = f"tftp://127.0.0.1:{port}/{name}"
    subprocess.run(["curl", "-sS", "--max-time", "10", "-o", str(out), url], check=True)
    return out.read_bytes()


def state(directory: Path) -> State:
    with Registry.open(directory) as registry:
        host = registry.get_host(MAC)
        assert host is not None
        return host.state


def test_tftp_config_signals_then_installed_boots_locally(directory: Path, tmp_path: Path) -> None:
    server = Server(directory, bind="127.0.0.1", tftp_port=0, http_port=0, dhcp="off")
    with server:
        assert server.settings is not None
        assert server.settings.http_base == f"http://127.0.0.1:{server.http_port}"
        assert state(directory) is State.PENDING
        config = tftp_get(server.tftp_port, f"pxelinux.cfg/01-{DASHES}", tmp_path / "c1").decode()
        assert "mboot.c32" in config
        assert f"answerfile={server.settings.http_base}/answerfile/{MAC} " in config
        assert state(directory) is State.SIGNALLED
        assert tftp_get(server.tftp_port, "pxelinux.0", tmp_path / "p") == b"\x7fpxelinux" * 1000
        with Registry.open(directory) as registry:
            token = registry.get_host(MAC).token  # type: ignore[union-attr]
        key = "test-installer-key-0123456789abcdefghij"
        enrolled = requests.post(
            f"{server.settings.http_base}/api/v1/hosts/{MAC}/enrol",
            json={"key": key},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        with Registry.open(directory) as registry:
            update_key = registry.update_key.public_line()
        assert enrolled.json() == {"protocol": 2, "enrolled": "new", "update_key": update_key}
        reply = requests.post(
            f"{server.settings.http_base}/api/v1/hosts/{MAC}/events",
            json={"state": "installed"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert reply.status_code == 200
        config = tftp_get(server.tftp_port, f"pxelinux.cfg/01-{DASHES}", tmp_path / "c2").decode()
        assert "localboot 0" in config
        assert str(token) not in config
        api_token = (directory / "api-token").read_text("utf-8").strip()
        over_http = requests.get(
            f"{server.settings.http_base}/api/v1/boot-configs/pxelinux.cfg/01-{DASHES}",
            headers={"Authorization": f"Bearer {api_token}"},
            timeout=10,
        )
        assert "localboot 0" in over_http.text
        ports = (server.tftp_port, server.http_port)
    # stopped: both ports are free again (SO_REUSEADDR as any server has, for TIME_WAIT)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", ports[0]))
    with socket.create_server(("127.0.0.1", ports[1])) as tcp:
        tcp.listen()


def test_wildcard_bind_needs_an_address_to_advertise(directory: Path) -> None:
    from common.errors import InputError

    with pytest.raises(InputError, match="advertise"):
        Server(directory, bind=ANY, tftp_port=0, http_port=0).start()
    with Registry.open(directory) as registry:
        registry.set_setting("advertise", "192.0.2.7")
    with Server(directory, bind="127.0.0.1", tftp_port=0, http_port=0) as server:
        assert server.settings is not None
        assert server.settings.http_base == f"http://192.0.2.7:{server.http_port}"


@pytest.mark.parametrize("kind", ["http", "tftp"])
def test_a_port_in_use_is_one_sentence_naming_it(directory: Path, kind: str) -> None:
    """``server run`` on a port something else holds: exit 2, one line naming the address,
    the port and the option to change it; no traceback, no "internal error"."""
    family = socket.SOCK_STREAM if kind == "http" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, family) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == "http":
            holder.listen()
        port = holder.getsockname()[1]
        ports = {"http": ("--http-port", str(port)), "tftp": ("--tftp-port", str(port))}
        other = {"http": ("--tftp-port", "0"), "tftp": ("--http-port", "0")}
        done = netinstall(
            "server", "run", str(directory), "--bind", "127.0.0.1", *ports[kind], *other[kind],
            timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    proto = "tcp" if kind == "http" else "udp"
    lines = [line for line in done.stderr.splitlines() if line.startswith("netinstall:")]
    assert len(lines) == 1, done.stderr
    assert f"cannot serve {kind.upper()} on 127.0.0.1:{port}/{proto}" in lines[0]
    assert f"choose another port with --{kind}-port" in lines[0]
    assert "Traceback" not in done.stderr
    assert "internal error" not in done.stderr
