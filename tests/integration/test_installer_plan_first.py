"""The installer plans first: a real HTTP server on loopback serves the answer file, the
repository and the events API; the installer runs whole (network, answer file, plan,
then the fresh flow) with the machine faked (its NICs, its disk read by pyparted from a
sparse image, commands recorded).

A disk too small for any layout fails at the plan step, in seconds, and the server sees
``failed`` with the planner's sentence before any request for the payload: the answer
file is the one file the installer asked for. With a disk big enough, the same run asks
for .treeinfo, each file's size and then the payload (and is stopped before it writes
anything), so the first test can fail.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from answerfile.bootargs import parse_cmdline
from common.errors import NetinstallError
from common.firmware import Firmware
from common.protocol.codec import VERSION
from installer_core import disk, install, network, survey
from installer_core.fetch import Transport
from installer_core.plan import Paths
from installer_core.report import ServerReporter
from partitioning import facts
from partitioning.model import GiB
from tests.repository import treeinfo_text
from tests.unit.test_installer_fakes import FakeRunner

pytestmark = pytest.mark.integration

MAC = "52:54:00:12:34:56"
TOKEN = "tok-plan-first"
DISK = "/dev/disk/by-id/netinstall-test-disk"  # never a real disk: the image file stands in
FILES = {
    "boot/xen.gz": b"X" * 50_000,
    "boot/vmlinuz": b"K" * 80_000,
    "boot/initrd.img": b"I" * 60_000,
    "dom0-rootfs.tar.zst": b"R" * 200_000,
}
ANSWER = """<installation mode="fresh">
  <primary-disk>{disk}</primary-disk>
  <keymap>us</keymap>
  <root-password type="plaintext">pw-plan-first</root-password>
  <source type="url">{server}/repo/</source>
  <admin-interface name="eth0" proto="dhcp"/>
  <hostname>plan-first</hostname>
  <timezone>UTC</timezone>
</installation>
"""


class Server:
    """The provisioning server as the installer sees it; every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.events: list[dict[str, Any]] = []
        served = self
        self.files = {f"/repo/{name}": data for name, data in FILES.items()}
        self.files["/repo/.treeinfo"] = treeinfo_text(FILES, "0.9.2", "plan1").encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _reply(self, status: int, body: bytes = b"", *, head: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _record(self) -> bytes:
                served.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_GET(self) -> None:
                self._record()
                if self.path == "/answerfile":
                    self._reply(200, served.answer.encode())
                elif self.path in served.files:
                    self._reply(200, served.files[self.path])
                else:
                    self._reply(404, b"not here")

            def do_HEAD(self) -> None:
                self._record()
                data = served.files.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()

            def do_POST(self) -> None:
                body = self._record()
                if self.path.endswith("/events"):
                    served.events.append(json.loads(body))
                self._reply(200, b"{}")

            def do_PUT(self) -> None:
                self._record()
                self._reply(200, b"{}")

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.answer = ANSWER.format(disk=DISK, server=self.url)

    def payload_requests(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.requests if p.startswith("/repo/")]


@pytest.fixture
def server() -> Iterator[Server]:
    served = Server()
    thread = threading.Thread(target=served.http.serve_forever, daemon=True)
    thread.start()
    yield served
    served.http.shutdown()
    served.http.server_close()
    thread.join(timeout=10)


def _machine(tmp_path: Path, image: Path) -> tuple[survey.Machine, network.System]:
    """eth0 with a carrier, no Xen, 4 GiB free, the disk read from ``image``."""
    net = tmp_path / "sys/net"
    for name, text in (("address", MAC), ("type", "1"), ("carrier", "1")):
        (net / "eth0").mkdir(parents=True, exist_ok=True)
        (net / "eth0" / name).write_text(text + "\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")
    runner = FakeRunner()
    machine = survey.Machine(
        runner=runner,
        sys_block=tmp_path / "sys/block",
        sys_net=net,
        xen_capabilities=tmp_path / "no-xen",
        meminfo=meminfo,
        is_block=lambda path: str(path) == DISK,
        read_facts=lambda _device, vms: facts.read_facts(image, vms),
    )
    return machine, network.System(runner=runner, sys_net=net, sleep=lambda _s: None)


def _run(tmp_path: Path, server: Server, size: int) -> tuple[int, str, float]:
    image = tmp_path / "disk.img"
    with image.open("wb") as out:
        out.truncate(size)
    machine, nics = _machine(tmp_path, image)
    cmdline = (
        f"install answerfile={server.url}/answerfile netinstall.server={server.url} "
        f"netinstall.token={TOKEN} BOOTIF=01-{MAC.replace(':', '-')}"
    )
    args = parse_cmdline(cmdline)
    boot = install.Boot(
        args,
        Firmware.BIOS,
        ServerReporter(server.url, args.bootif, TOKEN, sleep=lambda _s: None),
        Paths(work=tmp_path / "work", target=tmp_path / "target", log_file=tmp_path / "log"),
    )
    host = install.Host(
        runner=machine.runner,
        transport=Transport(sleep=lambda _s: None, timeout=10),
        network=nics,
        machine=machine,
    )
    out = io.StringIO()
    began = time.monotonic()
    code = install.run_install(boot, out, host)
    return code, out.getvalue(), time.monotonic() - began


def test_a_disk_too_small_fails_before_any_payload_request(tmp_path: Path, server: Server) -> None:
    code, out, took = _run(tmp_path, server, 8 * GiB)
    assert code == 1
    assert took < 30
    sentence = f"the primary disk {DISK} has 8 GiB; netinstall needs at least 12 GiB"
    failed = {"protocol": VERSION, "state": "failed", "step": "plan", "message": sentence}
    assert server.events[-1] == failed
    assert [e.get("step") for e in server.events if e["state"] == "installing"] == [
        "network",
        "fetch-answerfile",
        "validate-answerfile",
        "plan",
    ]
    assert server.payload_requests() == []
    fetched = [(m, p) for m, p in server.requests if not p.startswith("/api/")]
    assert fetched == [("GET", "/answerfile")]
    mac = MAC.replace(":", "-")
    assert server.requests[-2:] == [  # the log bundle, then failed
        ("PUT", f"/api/v1/hosts/{mac}/logs"),
        ("POST", f"/api/v1/hosts/{mac}/events"),
    ]
    assert f"netinstall: result failed: {sentence}" in out
    assert "pw-plan-first" not in out


def test_a_disk_big_enough_gets_its_payload_asked_for(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stop(*_args: object) -> None:
        raise NetinstallError("this test writes no disk")

    monkeypatch.setattr(disk, "partition", stop)
    code, out, _took = _run(tmp_path, server, 60 * GiB)
    assert code == 1
    assert server.events[-1] == {
        "protocol": VERSION,
        "state": "failed",
        "step": "partition",
        "message": "this test writes no disk",
    }
    asked = server.payload_requests()
    assert asked[0] == ("GET", "/repo/.treeinfo")
    assert asked[1:5] == [("HEAD", f"/repo/{name}") for name in FILES]  # the sizes, to plan
    assert sorted(asked[5:]) == sorted(("GET", f"/repo/{name}") for name in FILES)
    for name, data in FILES.items():
        assert (tmp_path / "work/payload" / name).read_bytes() == data  # verified in RAM
    assert "netinstall: step plan (4/18)" in out
