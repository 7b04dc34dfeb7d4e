"""The provisioning server's HTTP side on loopback (ephemeral ports): files with Range,
path escapes, answer files and tokens, the install events flow, the JSON API, logs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Container, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from pxe_server.http import HttpServer
from pxe_server.model import Profile, ServerSettings, State
from pxe_server.registry import Registry, default_profile

pytestmark = pytest.mark.integration

MAC = "52:54:00:12:34:56"
DASHES = "52-54-00-12-34-56"
BIG = 100 * 1024 * 1024


class Env:
    def __init__(self, directory: Path, server: HttpServer) -> None:
        self.directory = directory
        self.server = server
        self.base = f"http://127.0.0.1:{server.port}"
        # The operator's copy: the registry keeps only the token's keyed hash.
        self.api_token = (directory / "api-token").read_text("utf-8").strip()

    def registry(self) -> Registry:
        return Registry.open(self.directory)

    def host_token(self, mac: str = MAC) -> str:
        with self.registry() as registry:
            host = registry.get_host(mac)
            assert host is not None
            assert host.token is not None
            return host.token

    def enrol(self, mac: str = MAC, key: str | None = None) -> str:
        """Enrol an installer key for ``mac`` with its install token, as the installer
        does first; the key."""
        key = key or secrets.token_urlsafe(32)
        reply = requests.post(
            f"{self.base}/api/v1/hosts/{mac}/enrol",
            json={"protocol": 2, "key": key},
            headers={"Authorization": f"Bearer {self.host_token(mac)}"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        return key

    def answer(self, key: str, mac: str = MAC) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return requests.get(f"{self.base}/answerfile/{mac}", headers=headers, timeout=30)

    def config(self, path: str) -> requests.Response:
        """A boot config as TFTP serves it (the operator route the lab's user mode reads)."""
        return self.api("GET", f"/api/v1/boot-configs/{path}")

    def api(self, method: str, path: str, **kwargs: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.api_token}"}
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def event(self, token: str, body: dict[str, object], mac: str = MAC) -> requests.Response:
        return requests.post(
            f"{self.base}/api/v1/hosts/{mac}/events",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )


Start = Callable[..., Env]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    servers: list[HttpServer] = []

    def start(*, netboot: Path | None = None, repo: Path | None = None) -> Env:
        directory = tmp_path / "registry"
        with Registry.open(directory) as registry:
            if registry.get_profile("default") is None:
                registry.add_profile(default_profile())
            if registry.get_host(MAC) is None:
                registry.add_host(MAC, name="xenhost01")
        settings = ServerSettings(http_base="http://192.0.2.1:8080", tftp_address="192.0.2.1")
        server = HttpServer(directory, settings, netboot, repo, host="127.0.0.1", port=0)
        servers.append(server)
        server.start()
        return Env(directory, server)

    yield start
    for server in servers:
        server.stop()


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """A request sent byte for byte (no client library normalises ``..`` away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


# -- files ---------------------------------------------------------------------------


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path, bytes]:
    netboot, repo = tmp_path / "netboot", tmp_path / "repo"
    (repo / "boot").mkdir(parents=True)
    netboot.mkdir()
    content = os.urandom(1000)
    (netboot / "pxelinux.0").write_bytes(content)
    (repo / "boot" / "xen.gz").write_bytes(content[::-1])
    (netboot / "passwd").symlink_to("/etc/passwd")
    return netboot, repo, content


def test_boot_and_repo_files_with_range_and_head(
    start: Start, trees: tuple[Path, Path, bytes]
) -> None:
    netboot, repo, content = trees
    env = start(netboot=netboot, repo=repo)
    url = f"{env.base}/boot/pxelinux.0"
    whole = requests.get(url, timeout=10)
    assert whole.status_code == 200
    assert whole.content == content
    for header, expected in (
        ("bytes=0-99", content[:100]),
        ("bytes=-100", content[-100:]),
        ("bytes=900-", content[900:]),
        ("bytes=10-19", content[10:20]),
    ):
        part = requests.get(url, headers={"Range": header}, timeout=10)
        assert part.status_code == 206, header
        assert part.content == expected, header
        assert int(part.headers["Content-Length"]) == len(expected)
    head = requests.head(url, timeout=10)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "1000"
    assert head.content == b""
    tail = requests.get(f"{env.base}/repo/boot/xen.gz", headers={"Range": "bytes=-10"}, timeout=10)
    assert (tail.status_code, tail.content) == (206, content[::-1][-10:])
    missing = requests.get(f"{env.base}/repo/boot/nothing", timeout=10)
    assert missing.status_code == 404
    assert "nothing" in missing.json()["error"]


def test_missing_trees_say_what_to_do(start: Start) -> None:
    env = start()
    reply = requests.get(f"{env.base}/boot/pxelinux.0", timeout=10)
    assert reply.status_code == 404
    assert "no netboot tree configured" in reply.json()["error"]
    assert "netinstall images build" in reply.json()["error"]
    reply = requests.get(f"{env.base}/repo/.treeinfo", timeout=10)
    assert reply.status_code == 404
    assert "no install repository configured" in reply.json()["error"]


@pytest.mark.parametrize(
    "target",
    [
        "/boot/../../etc/passwd",
        "/boot/../../../../../../etc/passwd",
        "/boot/%2e%2e/%2e%2e/etc/passwd",
        "/boot/..%2f..%2f..%2fetc%2fpasswd",
        "/boot/%2fetc%2fpasswd",
        "/repo/boot/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/boot/pxelinux.0%00",
        "/boot/passwd",  # a symlink out of the tree
        "/config/../../etc/passwd",
        "/config/pxelinux.cfg%2f..%2f..%2fetc%2fpasswd",
    ],
)
def test_path_escapes_are_refused(
    start: Start, trees: tuple[Path, Path, bytes], target: str
) -> None:
    netboot, repo, _ = trees
    env = start(netboot=netboot, repo=repo)
    status, body = raw_get(env.server.port, target)
    assert status in (400, 403, 404)
    assert b"root:" not in body


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """100 MB of random bytes, and the sha256 of the slices the clients ask for."""
    path = tmp_path_factory.mktemp("big") / "install.img"
    whole, half, middle = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    with path.open("wb") as file:
        for index in range(BIG // (1 << 20)):
            chunk = os.urandom(1 << 20)
            file.write(chunk)
            whole.update(chunk)
            if index >= 50:
                half.update(chunk)
            if 10 <= index < 30:
                middle.update(chunk)
    ranges = {
        "": whole.hexdigest(),
        f"bytes={BIG // 2}-": half.hexdigest(),
        f"bytes={10 << 20}-{(30 << 20) - 1}": middle.hexdigest(),
    }
    return path, ranges


def test_fifty_concurrent_clients_get_exact_bytes(
    start: Start, big_file: tuple[Path, dict[str, str]]
) -> None:
    path, ranges = big_file
    env = start(netboot=path.parent)
    url = f"{env.base}/boot/install.img"
    headers = list(ranges)

    def fetch(index: int) -> tuple[str, str]:
        header = "" if index % 2 == 0 else headers[1 + (index // 2) % 2]
        reply = requests.get(
            url, headers={"Range": header} if header else {}, stream=True, timeout=120
        )
        assert reply.status_code == (206 if header else 200)
        digest = hashlib.sha256()
        for chunk in reply.iter_content(1 << 20):
            digest.update(chunk)
        return header, digest.hexdigest()

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(fetch, range(50)))
    assert len(results) == 50
    for header, digest in results:
        assert digest == ranges[header], header or "whole file"
    assert time.monotonic() - began < 90


# -- answer files, boot configs and the install flow -----------------------------------


def test_answer_file_needs_the_key_the_installer_enrolled(start: Start) -> None:
    env = start()
    token = env.host_token()
    url = f"{env.base}/answerfile/{MAC}"
    # The install token alone opens nothing: it only enrols a key.
    as_token = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert as_token.status_code == 401
    assert requests.get(url, params={"token": token}, timeout=10).status_code == 401
    key = env.enrol()
    good = env.answer(key)
    assert good.status_code == 200
    assert "<installation" in good.text
    assert "http://192.0.2.1:8080/repo/" in good.text
    assert env.answer("x" + key).status_code == 401
    assert requests.get(url, timeout=10).status_code == 401
    assert env.answer(key, DASHES).status_code == 200
    # An unknown MAC gets what a wrong key gets: the route does not tell who is registered.
    unknown = env.answer("x", "52:54:00:00:00:01")
    wrong = env.answer("x", DASHES)
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json()["error"].replace("52:54:00:00:00:01", MAC) == wrong.json()["error"]
    other = env.answer(key, "52:54:00:00:00:01")
    assert other.status_code == 401  # a host's key opens its own answer file only
    assert env.answer("x", "nonsense").status_code == 400


def test_broken_template_is_a_409_naming_the_problem(start: Start) -> None:
    env = start()
    with env.registry() as registry:
        registry.add_profile(Profile(name="broken", template="<installation>{{ nope }}"))
        registry.add_host("52:54:00:00:00:02", profile="broken")
    reply = env.answer(env.enrol("52:54:00:00:00:02"), "52:54:00:00:00:02")
    assert reply.status_code == 409  # the operator's to fix: the installer does not retry
    assert "nope" in reply.json()["error"]


def test_install_flow_events_and_rearm(start: Start) -> None:
    env = start()
    token = env.host_token()
    config = f"pxelinux.cfg/01-{DASHES}"
    first = env.config(config)
    assert first.status_code == 200
    assert f"token={token}" in first.text
    with env.registry() as registry:
        assert registry.get_host(MAC).state is State.SIGNALLED  # type: ignore[union-attr]
    assert env.event("wrong", {"state": "installing"}).status_code == 401
    assert env.event(token, {"state": "installing"}).status_code == 401  # a ticket only
    key = env.enrol()
    assert key not in first.text
    assert env.event(
        key, {"state": "installing", "step": "partition", "progress": 0.35}
    ).json() == {"protocol": 2}
    assert env.event(key, {"state": "bogus"}).status_code == 400
    assert env.event(key, {"state": "installing", "progress": "half"}).status_code == 400
    assert env.event(key, {"state": "installed"}).status_code == 200
    local = env.config(config)
    assert "localboot 0" in local.text
    assert token not in local.text
    assert token not in requests.get(f"{env.base}/ipxe/{MAC}", timeout=10).text
    assert env.event(key, {"state": "installing"}).status_code in (400, 409)
    running = env.event(key, {"state": "running", "facts": {"payload_version": "0.1.0"}})
    assert running.status_code == 200
    credential = running.json()["agent_credential"]
    assert running.json()["checkin_interval"] > 0
    # Until the agent's first check-in the key may report running again (first boot
    # lost the reply): a new credential replaces the first.
    again = env.event(key, {"state": "running"})
    assert again.status_code == 200
    first, credential = credential, again.json()["agent_credential"]
    assert env.event(first, {"state": "running"}).status_code == 401  # replaced
    checkin = requests.post(
        f"{env.base}/api/v1/hosts/{MAC}/checkin",
        json={"running_version": "0.1.0"},
        headers={"Authorization": f"Bearer {credential}"},
        timeout=30,
    )
    assert checkin.status_code == 200
    assert env.event(key, {"state": "running"}).status_code == 401  # the key is spent
    assert env.answer(key).status_code == 401
    assert env.event(credential, {"state": "running"}).json() == {"protocol": 2}
    assert env.event(credential, {"state": "installing"}).status_code in (400, 409)
    shown = env.api("GET", f"/api/v1/hosts/{MAC}").json()
    assert (shown["state"], shown["running_version"]) == ("running", "0.1.0")
    assert credential not in env.api("GET", f"/api/v1/hosts/{MAC}").text
    rearmed = env.api("POST", f"/api/v1/hosts/{MAC}/rearm")
    assert rearmed.status_code == 200
    assert rearmed.json()["state"] == "pending"
    new_token = env.host_token()
    assert new_token != token
    assert new_token not in rearmed.text
    again = env.config(config)
    assert f"token={new_token}" in again.text
    states = [e["state"] for e in env.api("GET", f"/api/v1/hosts/{MAC}/events").json()["events"]]
    assert "installed" in states
    assert states[-1] == "signalled"


def test_unknown_mac_boots_locally_and_is_not_registered(start: Start) -> None:
    env = start()
    reply = env.config("pxelinux.cfg/01-52-54-00-aa-bb-cc")
    assert reply.status_code == 200
    assert "localboot" in reply.text
    assert env.api("GET", "/api/v1/hosts/52:54:00:aa:bb:cc").status_code == 404
    assert env.config("nothing/here").status_code == 404
    # the route is the operator's: without the API token, nothing
    unauthenticated = f"{env.base}/api/v1/boot-configs/pxelinux.cfg/01-{DASHES}"
    assert requests.get(unauthenticated, timeout=10).status_code == 401
    # ... while boot loaders read the same over HTTP, as over TFTP
    public = requests.get(f"{env.base}/config/pxelinux.cfg/01-{DASHES}", timeout=10)
    assert public.text == env.config(f"pxelinux.cfg/01-{DASHES}").text


# -- the JSON API ------------------------------------------------------------------------


def test_api_needs_the_api_token(start: Start) -> None:
    env = start()
    url = f"{env.base}/api/v1/hosts"
    assert requests.get(url, timeout=10).status_code == 401
    wrong = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 403
    assert "error" in wrong.json()
    host_token = env.host_token()
    as_host = requests.get(url, headers={"Authorization": f"Bearer {host_token}"}, timeout=10)
    assert as_host.status_code == 403
    assert requests.post(url, json={"mac": "52:54:00:00:00:09"}, timeout=10).status_code == 401
    listed = env.api("GET", "/api/v1/hosts")
    assert listed.status_code == 200
    assert [h["mac"] for h in listed.json()["hosts"]] == [MAC]
    assert host_token not in listed.text
    assert env.api_token not in listed.text


def test_api_hosts_crud_and_errors(start: Start) -> None:
    env = start()
    created = env.api(
        "POST",
        "/api/v1/hosts",
        json={"mac": "52-54-00-00-00-0A", "name": "xen2", "variables": {"disk": "vda"}},
    )
    assert created.status_code == 201
    assert created.json()["mac"] == "52:54:00:00:00:0a"
    assert created.json()["variables"] == {"disk": "vda"}
    assert created.json()["token"] == "set"  # whether it has one, never the token
    assert env.host_token("52:54:00:00:00:0a") not in created.text
    assert env.api("POST", "/api/v1/hosts", json={"mac": "52:54:00:00:00:0a"}).status_code == 400
    for body in ({"mac": "nonsense"}, {"mac": "52:54:00:00:00:0b", "colour": "red"}, [1]):
        bad = env.api("POST", "/api/v1/hosts", json=body)
        assert bad.status_code == 400, body
        assert bad.json()["error"]
    not_json = env.api("POST", "/api/v1/hosts", data=b"{nope")
    assert (not_json.status_code, not_json.json()["error"]) == (400, "the request body is not JSON")
    edited = env.api("PATCH", "/api/v1/hosts/52%3A54%3A00%3A00%3A00%3A0a", json={"name": "xen3"})
    assert edited.status_code == 200
    assert (edited.json()["name"], edited.json()["variables"]) == ("xen3", {"disk": "vda"})
    assert (
        env.api("PATCH", "/api/v1/hosts/52:54:00:00:00:0a", json={"profile": "nope"}).status_code
        == 400
    )
    assert env.api("GET", "/api/v1/hosts/52:54:00:00:00:0c").status_code == 404
    assert env.api("GET", "/api/v1/hosts/zz").status_code == 400
    assert env.api("DELETE", "/api/v1/hosts/52:54:00:00:00:0a").status_code == 200
    assert env.api("DELETE", "/api/v1/hosts/52:54:00:00:00:0a").status_code == 404
    not_allowed = env.api("PUT", "/api/v1/hosts")
    assert not_allowed.status_code == 405
    assert "error" in not_allowed.json()
    assert env.api("POST", "/api/v1/hosts/52:54:00:00:00:0c/rearm").status_code == 404


def test_log_bundle_upload(start: Start) -> None:
    env = start()
    token = env.enrol()  # the installer's key
    url = f"{env.base}/api/v1/hosts/{MAC}/logs"
    bundle = os.urandom(300_000)
    assert requests.put(url, data=bundle, timeout=10).status_code == 401
    stored = requests.put(
        url, data=bundle, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert stored.status_code == 201
    files = list((env.directory / "logs" / DASHES).glob("*.tar.bz2"))
    assert [f.read_bytes() for f in files] == [bundle]
    assert stored.json()["stored"] == str(files[0].relative_to(env.directory))
    with socket.create_connection(("127.0.0.1", env.server.port), timeout=10) as conn:
        conn.sendall(
            f"PUT /api/v1/hosts/{MAC}/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {65 * 1024 * 1024}\r\nConnection: close\r\n\r\n".encode()
        )
        assert conn.recv(4096).split(b" ", 2)[1] == b"413"


def test_request_log_has_no_secrets(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="netinstall.http")
    env = start()
    token = env.host_token()
    requests.get(f"{env.base}/answerfile/{MAC}", params={"token": token}, timeout=10)
    key = env.enrol()
    env.answer(key)
    env.event(key, {"state": "installing", "message": f"token {token} key {key}"})
    env.api("GET", "/api/v1/hosts")
    deadline = time.monotonic() + 5
    while caplog.text.count("\n") < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"GET /answerfile/{MAC}?token=REDACTED 401" in caplog.text
    assert f"GET /answerfile/{MAC} 200" in caplog.text
    assert f"POST /api/v1/hosts/{MAC}/enrol 200" in caplog.text
    assert f"POST /api/v1/hosts/{MAC}/events 200" in caplog.text
    assert token not in caplog.text
    assert key not in caplog.text
    assert env.api_token not in caplog.text


# -- the dom0 agent against this server: upgrade and restore ---------------------------

DOM0 = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "dom0"
FINDMNT = ("findmnt", "-n", "-o", "UUID,TARGET", "-T", "/boot")


MAP_REPORT = json.dumps({
    "maps": [{"name": "mpatha", "uuid": "3600a0b80001", "path_groups": [
        {"paths": [{"dev": "sda", "chk_st": "ready"}, {"dev": "sdb", "chk_st": "ready"}]},
    ]}],
})  # fmt: skip


def dom0_agent(env: Env, root: Path, credential: str) -> tuple[Any, list[tuple[str, ...]]]:
    """The real netinstall_dom0 agent (requests to this server) with a recording runner."""
    if str(DOM0) not in sys.path:
        sys.path.insert(0, str(DOM0))
    from netinstall_dom0.agent import Agent
    from netinstall_dom0.config import AgentConfig
    from netinstall_dom0.facts import MULTIPATH_MAPS
    from netinstall_dom0.layout import Layout
    from netinstall_dom0.server import ServerClient

    from common.process import Completed

    calls: list[tuple[str, ...]] = []

    def runner(argv: Sequence[str], *, ok_codes: Container[int] = (0,)) -> Completed:
        if tuple(argv) == MULTIPATH_MAPS:  # each check-in's storage query: a SAN host's map
            return Completed(tuple(argv), 0, MAP_REPORT, "")
        calls.append(tuple(argv))
        out = "0b6e9d7c-1f2a-4c3b-8d4e-5f6a7b8c9d0e /\n" if tuple(argv) == FINDMNT else ""
        return Completed(tuple(argv), 0, out, "")

    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/netinstall-release").write_text("VERSION=0.1.0\n")
    config = AgentConfig(env.base, MAC, credential, checkin_interval=300)
    session = requests.Session()
    return Agent(config, ServerClient(env.base, MAC, session), runner, Layout(root)), calls


def reachable(env: Env) -> Env:
    """Make the server name itself by its loopback address, which the agent can reach."""
    env.server.settings = ServerSettings(http_base=env.base, tftp_address="127.0.0.1")
    return env


@pytest.fixture
def installer_tree(tmp_path: Path) -> Path:
    netboot = tmp_path / "netboot"
    netboot.mkdir()
    for name in ("xen.gz", "vmlinuz", "install.img"):
        (netboot / name).write_bytes(f"{name} bytes".encode())
    return netboot


def running_with_agent(env: Env) -> str:
    """Install and first boot reported; the agent credential the first boot was given."""
    key = env.enrol()
    assert env.event(key, {"state": "installed"}).status_code == 200
    reply = env.event(key, {"state": "running", "facts": {"payload_version": "0.1.0"}})
    return str(reply.json()["agent_credential"])


def test_the_dom0_agent_upgrades_through_this_server(
    start: Start, installer_tree: Path, tmp_path: Path
) -> None:
    env = reachable(start(netboot=installer_tree))
    with env.registry() as registry:
        registry.add_repository("0.2.0", str(tmp_path / "repo-0.2.0"))
    credential = running_with_agent(env)
    agent, calls = dom0_agent(env, tmp_path / "root", credential)
    from netinstall_dom0.agent import Outcome

    assert agent.checkin_once() is Outcome.IDLE  # nothing assigned
    reply = env.api("POST", f"/api/v1/hosts/{MAC}/upgrade", json={"version": "0.2.0"})
    assert reply.status_code == 200
    assert reply.json()["netboot_armed"] is False
    token = env.host_token()

    assert agent.checkin_once() is Outcome.REBOOTING
    staged = agent.layout.installer_dir
    assert (staged / "xen.gz").read_bytes() == b"xen.gz bytes"  # fetched from /boot/
    assert (staged / "initrd.img").read_bytes() == b"install.img bytes"
    entry = agent.layout.grub_entry.read_text()
    assert f"answerfile={env.base}/answerfile/{MAC} " in entry
    assert f"netinstall.token={token} " in entry
    assert calls[-2:] == [("grub-reboot", "netinstall-installer"), ("systemctl", "reboot")]
    with Registry.open(env.directory) as registry:
        reported = registry.get_host(MAC)
    assert reported is not None
    assert reported.facts["multipath"][0]["paths"][1] == {"device": "sdb", "state": "ready"}
    with env.registry() as registry:
        host = registry.get_host(MAC)
        assert host is not None
        assert (host.state, host.netboot_armed) == (State.SIGNALLED, False)

    # The installer boots once, enrols its key, fetches the built-in upgrade answer file,
    # reports.
    key = env.enrol()
    answer = env.answer(key)
    assert answer.status_code == 200
    assert '<installation mode="upgrade">' in answer.text
    assert f"{env.base}/repo/0.2.0/" in answer.text
    for body in ({"state": "installing", "step": "partition"}, {"state": "installed"}):
        assert env.event(key, body).status_code == 200
    # The upgraded system's first boot reports running 0.2.0 and gets a new credential.
    reply = env.event(key, {"state": "running", "facts": {"payload_version": "0.2.0"}})
    new_credential = reply.json()["agent_credential"]
    assert new_credential != credential
    with env.registry() as registry:
        host = registry.get_host(MAC)
        assert host is not None
        assert (host.work, host.running_version, host.token) == (None, "0.2.0", None)
    (tmp_path / "root/etc/netinstall-release").write_text("VERSION=0.2.0\n")
    upgraded, _ = dom0_agent(env, tmp_path / "root", new_credential)
    assert upgraded.checkin_once() is Outcome.IDLE  # the staged installer is cleaned up
    assert not staged.exists()


def test_the_dom0_agent_waits_for_a_manual_reboot_to_restore(
    start: Start, installer_tree: Path, tmp_path: Path
) -> None:
    env = reachable(start(netboot=installer_tree))
    credential = running_with_agent(env)
    agent, calls = dom0_agent(env, tmp_path / "root", credential)
    from netinstall_dom0.agent import Outcome

    reply = env.api("POST", f"/api/v1/hosts/{MAC}/restore", json={"reboot": "manual"})
    assert reply.json()["work"] == "restore"
    assert agent.checkin_once() is Outcome.WAITING
    assert ("systemctl", "reboot") not in calls
    assert agent.checkin_once() is Outcome.WAITING  # reports installed-reboot-required
    with env.registry() as registry:
        host = registry.get_host(MAC)
        assert host is not None
        assert (host.state, host.step) == (State.INSTALLED, "reboot-required")
        messages = [e.message for e in registry.events(MAC)]
    assert messages[-2:] == [
        "signalled: the agent fetched the installer",
        "installed (reboot required)",
    ]
    # The operator reboots: the restore enrols its key with the install token and reports.
    key = env.enrol()
    answer = env.answer(key)
    assert "<backup-disk>sda</backup-disk>" in answer.text
    assert env.event(key, {"state": "installing", "step": "restore"}).status_code == 200
    assert env.event(key, {"state": "installed"}).status_code == 200
    # A restored system whose agent checks in first ends the work itself.
    restored, _ = dom0_agent(env, tmp_path / "restored", credential)
    assert restored.checkin_once() is Outcome.IDLE
    with env.registry() as registry:
        host = registry.get_host(MAC)
        assert host is not None
        assert (host.state, host.work, host.token) == (State.RUNNING, None, None)


def test_checkin_refuses_a_wrong_credential(start: Start) -> None:
    env = start()
    running_with_agent(env)
    reply = requests.post(
        f"{env.base}/api/v1/hosts/{MAC}/checkin",
        json={"running_version": "0.1.0"},
        headers={"Authorization": f"Bearer {env.api_token}"},
        timeout=10,
    )
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"
