"""The fast request path against a real server and other processes (README "Fast request
path"): a cached install config is never served once another process changed the host,
and ``host list`` loads no server stack."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from pxe_server.server import Server
from tests.integration.conftest import netinstall

pytestmark = pytest.mark.integration

MAC = "52:54:00:12:34:56"
DASHES = "52-54-00-12-34-56"
KEY = "fast-path-installer-key-0123456789abcdefgh"


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    where = tmp_path / "server"
    for argv in (
        ("server", "init", str(where), "--repo", str(tmp_path)),
        ("host", "add", MAC, "--dir", str(where), "--var", "root_password=secret"),
    ):
        done = netinstall(*argv)
        assert done.returncode == 0, done.stderr
    return where


def tftp_get(port: int, name: str, out: Path) -> str:
    url = f"tftp://127.0.0.1:{port}/{name}"
    subprocess.run(["curl", "-sS", "--max-time", "10", "-o", str(out), url], check=True)
    return out.read_text()


def in_another_process(directory: Path, code: str) -> None:
    """``code`` run with ``registry`` open on ``directory``, in a process of its own."""
    script = (
        "import sys\nfrom pxe_server.registry import Registry\n"
        f"with Registry.open(sys.argv[1]) as registry:\n    {code}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(directory)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_boot_once_holds_when_another_process_marks_the_host_installed(
    directory: Path, tmp_path: Path
) -> None:
    """A stale install config after boot once is an unwanted reinstall."""
    with Server(directory, bind="127.0.0.1", tftp_port=0, http_port=0) as server:
        assert server.settings is not None
        base = server.settings.http_base
        http = f"{base}/config/grub/grub.cfg-01-{DASHES}"
        tftp = f"pxelinux.cfg/01-{DASHES}"
        for _ in range(3):  # rendered once, then served from the cache
            assert "netinstall.token=" in requests.get(http, timeout=10).text
            assert "netinstall.token=" in tftp_get(server.tftp_port, tftp, tmp_path / "c")
        in_another_process(directory, f"registry.record_event({MAC!r}, 'installed')")
        assert "netinstall.token=" not in requests.get(http, timeout=10).text
        local = tftp_get(server.tftp_port, tftp, tmp_path / "c")
        assert "netinstall.token=" not in local
        assert "localboot" in local
        # Rearmed by the CLI: the next fetch installs again, with the new token.
        done = netinstall("host", "rearm", MAC, "--dir", str(directory))
        assert done.returncode == 0, done.stderr
        assert "netinstall.token=" in requests.get(http, timeout=10).text


def test_an_answer_file_follows_a_profile_changed_by_another_process(directory: Path) -> None:
    with Server(directory, bind="127.0.0.1", tftp_port=0, http_port=0) as server:
        assert server.settings is not None
        base = server.settings.http_base
        config = requests.get(f"{base}/config/grub/grub.cfg-01-{DASHES}", timeout=10).text
        token = config.split("netinstall.token=", 1)[1].split()[0].strip("'")
        enrolled = requests.post(
            f"{base}/api/v1/hosts/{MAC}/enrol",
            json={"key": KEY},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert enrolled.status_code == 200, enrolled.text
        url, auth = f"{base}/answerfile/{MAC}", {"Authorization": f"Bearer {KEY}"}
        first = requests.get(url, headers=auth, timeout=10).text
        assert first == requests.get(url, headers=auth, timeout=10).text
        assert '<root-password type="hash">$6$' in first
        in_another_process(
            directory,
            "from dataclasses import replace; "
            "profile = registry.get_profile('default'); "
            "registry.update_profile(replace(profile, template=profile.template.replace("
            "'</installation>', '<!-- changed --></installation>')))",
        )
        assert "<!-- changed -->" in requests.get(url, headers=auth, timeout=10).text


def test_host_list_loads_no_server_stack(directory: Path) -> None:
    script = (
        "import sys\nfrom netinstall.cli import main\n"
        "try:\n    main(['host', 'list', '--dir', sys.argv[1]])\n"
        "except SystemExit:\n    pass\n"
        "loaded = [m for m in ('aiohttp', 'jinja2', 'lxml') if m in sys.modules]\n"
        "print('LOADED', loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(directory)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert MAC in done.stdout
    assert "LOADED []" in done.stdout


def test_a_write_queued_for_a_client_that_went_away_is_never_done(directory: Path) -> None:
    """Under load a client gives up and asks again: the work queued for the request it
    gave up (here a write behind a busy writer thread) must not be done as well."""
    token = (directory / "api-token").read_text().strip()
    body = json.dumps({"protocol": 2, "name": "renamed"}).encode()
    with Server(directory, bind="127.0.0.1", tftp_port=0, http_port=0) as server:
        assert server.registry is not None
        registry, busy = server.registry, threading.Event()

        def write_long() -> None:  # the writer thread busy with a write (its lock held)
            with registry._write():
                busy.wait(30)

        registry.writer().submit(write_long)
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as client:
            client.sendall(
                f"PATCH /api/v1/hosts/{MAC} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                f"{token}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                "\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 10  # until its write waits behind the busy one
            while server.registry.writer()._work_queue.qsize() < 1:
                assert time.monotonic() < deadline, "the request never reached the writer"
                time.sleep(0.01)
        time.sleep(0.2)  # the server sees the connection close
        busy.set()
        server.registry.writer().submit(lambda: None).result(timeout=10)  # the queue drained
        host = server.registry.get_host(MAC)
        assert host is not None
        assert host.name != "renamed"
