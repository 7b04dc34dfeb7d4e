"""Two ``netinstall server run`` processes on one PostgreSQL registry, and a simulated host.

``two_servers(tmp, url, pki)`` makes two server directories with ``server init --db URL``
(server B also ``--tls-cert/--tls-key``: its operator API on HTTPS only), starts both on
loopback with ports of their own, and stops them afterwards. ``BootClient`` is what a
machine's boot loader, installer, first boot and dom0 agent send over HTTP (the boot
path: no QEMU), one plain request each, as ``installer_core.report`` and the agent do.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.conftest import NETINSTALL, netinstall
from tests.pki import Pki
from tests.repository import write_repository

VERSION = "1.0"
PAYLOAD = ("boot/vmlinuz", "boot/initrd.img", "boot/xen.gz", "dom0-rootfs.tar.zst")
START_TIMEOUT = 60  # seconds for a server to say where it listens (a busy 2-core box)
_SERVING = re.compile(r"serving: TFTP [^:]+:(\d+) .*HTTP [^:]+:(\d+)")
_TLS = re.compile(r"operator API on https://[^:]+:(\d+) only")
_TOKEN = re.compile(r"netinstall\.token=([A-Za-z0-9_-]+)")


@dataclass
class Running:
    """One ``server run``: its directory, ports and log."""

    directory: Path
    process: subprocess.Popen[bytes]
    log: Path
    tftp_port: int
    http_port: int
    tls_port: int | None

    @property
    def url(self) -> str:
        """The operator API's base: https with TLS on, else the plain port."""
        if self.tls_port is not None:
            return f"https://127.0.0.1:{self.tls_port}"
        return f"http://127.0.0.1:{self.http_port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def init(
    directory: Path, url: str, repo: Path, netboot: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    done = netinstall("server", "init", str(directory), "--db", url, "--repo", str(repo),
                      "--netboot", str(netboot), *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


@contextmanager
def serving(directory: Path, log: Path, *extra: str) -> Iterator[Running]:
    argv = [str(NETINSTALL), "server", "run", str(directory), "--bind", "127.0.0.1",
            "--tftp-port", "0", "--http-port", "0", *extra]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stderr=out, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = log.read_text(errors="replace")
            found = _SERVING.search(text)
            tls = _TLS.search(text)
            if found and (tls or "--tls-cert" not in extra):
                break
            assert process.poll() is None, f"server run stopped: {text[-3000:]}"
            assert time.monotonic() < deadline, f"server run did not start: {text[-3000:]}"
            time.sleep(0.05)
        tls_port = int(tls[1]) if tls else None
        yield Running(directory, process, log, int(found[1]), int(found[2]), tls_port)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Pair:
    a: Running  # plain HTTP, its API on the plain port
    b: Running  # TLS on: its API on HTTPS only
    token_file: Path  # the registry's API token (the first directory's copy)
    pki: Pki
    init_b: str  # what `server init` of the second directory said

    def api_b(self, path: str) -> Reply:
        """``GET path`` on B's HTTPS API with the API token, the test CA verifying it."""
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", self.b.tls_port, context=context)
        token = self.token_file.read_text().strip()
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            got = conn.getresponse()
            return Reply(got.status, got.read(), {k.lower(): v for k, v in got.getheaders()})
        finally:
            conn.close()

    def cli_b(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``netinstall --server https://B ... ARGS``: the operator over B's HTTPS API."""
        return netinstall("--server", self.b.url, "--ca-file", str(self.pki.ca),
                          "--token-file", str(self.token_file), *args)  # fmt: skip


B_ADDRESS = "127.0.0.2"  # what server B puts into its URLs (it listens on 127.0.0.1)


@contextmanager
def two_servers(tmp: Path, url: str, pki: Pki) -> Iterator[Pair]:
    files = {name: name.encode() for name in PAYLOAD}
    repo = write_repository(tmp / "repo", files, VERSION, "b1")
    netboot = tmp / "netboot"
    netboot.mkdir()
    (netboot / "pxelinux.0").write_bytes(b"\x7fpxelinux" * 10)
    shared = ("--shared-dir", str(tmp / "shared"))
    init(tmp / "a", url, repo, netboot, *shared)
    said_b = init(tmp / "b", url, repo, netboot, *shared).stdout
    tls = ("--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-port", "0")
    with ExitStack() as stack:
        a = stack.enter_context(serving(tmp / "a", tmp / "a.log"))
        # B advertises an address of its own (server run --advertise), over the registry's.
        b = stack.enter_context(serving(tmp / "b", tmp / "b.log", *tls, "--advertise", B_ADDRESS))
        yield Pair(a, b, tmp / "a" / "api-token", pki, said_b)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict), self.body[:200]
        return value


def request(
    port: int,
    method: str,
    path: str,
    *,
    secret: str | None = None,
    body: object = None,
    raw: bytes | None = None,
    timeout: float = 30,
) -> Reply:
    """One request on a new connection to 127.0.0.1:``port``, as a host's client sends it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
    data = raw
    if body is not None:
        data = json.dumps({"protocol": 2, **body}).encode()  # type: ignore[dict-item]
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, data, headers)
        got = conn.getresponse()
        return Reply(got.status, got.read(), {k.lower(): v for k, v in got.getheaders()})
    finally:
        conn.close()


def mac_of(index: int) -> str:
    return "52:54:00:" + ":".join(f"{(index >> s) & 0xFF:02x}" for s in (16, 8, 0))


class BootClient:
    """One machine's requests on the boot path, to whichever server's HTTP port is given."""

    def __init__(self, mac: str) -> None:
        self.mac = mac
        self.api = f"/api/v1/hosts/{mac}"
        self.key = f"two-servers-key-{mac.replace(':', '')}-0123456789abcdef"
        self.credential: str | None = None

    def boot_config(self, port: int) -> str:
        """GRUB's config over HTTP, as the firmware's boot loader fetches it."""
        path = f"/config/grub/grub.cfg-01-{self.mac.replace(':', '-')}"
        reply = request(port, "GET", path)
        assert reply.status == 200, reply
        return reply.body.decode()

    @staticmethod
    def token_of(config: str) -> str | None:
        found = _TOKEN.search(config)
        return found[1] if found else None

    def enrol(self, port: int, token: str) -> Reply:
        return request(port, "POST", f"{self.api}/enrol", secret=token, body={"key": self.key})

    def answer_file(self, port: int) -> Reply:
        return request(port, "GET", f"/answerfile/{self.mac}", secret=self.key)

    def event(self, port: int, state: str, **fields: object) -> Reply:
        secret = self.key if self.credential is None else self.credential
        body = {"state": state, **fields}
        return request(port, "POST", f"{self.api}/events", secret=secret, body=body)

    def logs(self, port: int, data: bytes) -> Reply:
        return request(port, "PUT", f"{self.api}/logs", secret=self.key, raw=data)

    def checkin(self, port: int) -> Reply:
        assert self.credential is not None
        body = {"running_version": VERSION, "state": "running"}
        return request(port, "POST", f"{self.api}/checkin", secret=self.credential, body=body)
