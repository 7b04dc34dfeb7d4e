"""No secret in clear (issue 16, part 4): a host registered with a known root password
through the CLI and another through the API, a fake install run through its events until
the host holds an agent credential; then every route of the server's own router (running
for real on loopback) and every `list`/`show` command of the CLI's click tree, with and
without --json, and the registry file and its WAL, are searched for the passwords, the
install tokens, the agent credential and the API token.

The only places a secret may appear are where the protocol hands one to its owner
(docs/protocol.md, "Secrets"): a host's install token in its own boot config.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import requests

from netinstall.cli import main
from pxe_server.http import HttpServer, make_app
from pxe_server.http_files import Context
from pxe_server.model import ServerSettings, mac_dashes
from pxe_server.registry import REGISTRY_FILE, Registry
from tests.integration.conftest import netinstall

pytestmark = pytest.mark.integration

CLI_MAC = "52:54:00:5e:c0:01"  # added with `netinstall host add`, installed and running
API_MAC = "52:54:00:5e:c0:02"  # added with POST /api/v1/hosts, pending
CLI_PASSWORD = "cli-Root-Password-7f3a9"
API_PASSWORD = "api-Root-Password-c41d2"
SETTINGS = ServerSettings(http_base="http://192.0.2.1:8080", tftp_address="192.0.2.1")
# Routes whose reply is a host's boot config: the protocol hands the install token of the
# host named in the path to that host there (docs/protocol.md, "Secrets").
# The routes that hand an armed host its own boot config (with its install token);
# /boot/{path} serves the configs of loaders that came over HTTP (pxelinux.0, HTTP Boot).
BOOT_CONFIG_ROUTES = {
    "/ipxe/{mac}",
    "/config/{path}",
    "/boot/{path}",
    "/api/v1/boot-configs/{path}",
}
_TOKEN_WORD = re.compile(r"netinstall\.token=(\S+)")


class Walk:
    """The server directory, the running server, and every secret seen so far."""

    def __init__(self, directory: Path, server: HttpServer) -> None:
        self.directory = directory
        self.server = server
        self.base = f"http://127.0.0.1:{server.port}"
        self.api_token = (directory / "api-token").read_text("utf-8").strip()
        self.tokens: dict[str, set[str]] = {CLI_MAC: set(), API_MAC: set()}
        self.credentials: list[str] = []
        self.replies: list[tuple[str, str, str]] = []  # (method, route, text) searched
        # The web console's pages are searched too, through a session of its own (its
        # cookie goes to /ui paths only): the login is the form's, with our origin.
        self.browser = requests.Session()
        login = self.browser.post(
            f"{self.base}/ui/login",
            data={"token": self.api_token},
            headers={"Origin": self.base},
            allow_redirects=False,
            timeout=30,
        )
        assert login.status_code == 303, login.text
        assert self.api_token not in login.text + json.dumps(dict(login.headers))

    def note_tokens(self) -> None:
        """Every live install token (the registry unseals them in memory)."""
        with Registry.open(self.directory) as registry:
            for host in registry.list_hosts():
                if host.token:
                    self.tokens[host.mac].add(host.token)

    def request(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> str:
        headers = {"Authorization": f"Bearer {token or self.api_token}"}
        reply = self.browser.request(
            method, self.base + path, headers=headers, timeout=30, **kwargs
        )
        assert reply.status_code < 500, (method, path, reply.status_code, reply.text)
        return reply.text + "\n" + json.dumps(dict(reply.headers))

    def passwords_and_credentials(self) -> list[str]:
        return [CLI_PASSWORD, API_PASSWORD, self.api_token, *self.credentials]

    def all_tokens(self) -> set[str]:
        return {t for tokens in self.tokens.values() for t in tokens}


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    directory = tmp_path / "srv"
    repo, netboot = tmp_path / "repo", tmp_path / "netboot"
    repo.mkdir()
    netboot.mkdir()
    for args in (
        ("server", "init", str(directory), "--repo", str(repo), "--netboot", str(netboot)),
        ("host", "add", CLI_MAC, "--var", f"root_password={CLI_PASSWORD}", "--var", "disk=vda"),
    ):
        done = netinstall(*args, "--dir", str(directory))
        assert done.returncode == 0, done.stderr
        assert CLI_PASSWORD not in done.stdout + done.stderr
    server = HttpServer(directory, SETTINGS, None, None, host="127.0.0.1", port=0)
    server.start()
    try:
        yield Walk(directory, server)
    finally:
        server.stop()


def boot_token(walk: Walk, mac: str) -> str:
    """The install token from the host's own boot config (the protocol's hand-out)."""
    config = walk.request("GET", f"/api/v1/boot-configs/pxelinux.cfg/01-{mac_dashes(mac)}")
    found = _TOKEN_WORD.search(config)
    assert found is not None, config
    return found[1]


def fake_install(walk: Walk) -> None:
    """The API host is created; the CLI host installs and its first boot reports running."""
    created = walk.request(
        "POST",
        "/api/v1/hosts",
        json={"mac": API_MAC, "variables": {"root_password": API_PASSWORD, "disk": "sda"}},
    )
    assert '"root_password": "<redacted>"' in created
    token = boot_token(walk, CLI_MAC)
    walk.tokens[CLI_MAC].add(token)
    key = secrets.token_urlsafe(32)  # the installer's own, enrolled with the token
    walk.credentials.append(key)
    enrolled = walk.request("POST", f"/api/v1/hosts/{CLI_MAC}/enrol", token, json={"key": key})
    assert '"enrolled": "new"' in enrolled
    for state in ("installing", "installed"):
        walk.request("POST", f"/api/v1/hosts/{CLI_MAC}/events", key, json={"state": state})
    answer = walk.request("GET", f"/answerfile/{CLI_MAC}", key)
    assert '<root-password type="hash">$6$' in answer
    assert CLI_PASSWORD not in answer
    running = requests.post(
        f"{walk.base}/api/v1/hosts/{CLI_MAC}/events",
        json={"state": "running", "facts": {"payload_version": "0.1.0"}},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    credential = running.json()["agent_credential"]  # the protocol's hand-out
    walk.credentials.append(credential)
    checkin = walk.request(
        "POST",
        f"/api/v1/hosts/{CLI_MAC}/checkin",
        credential,
        json={"running_version": "0.1.0", "message": f"agent {credential}"},
    )
    assert "field 'message' is not part of protocol version 1" in checkin  # refused, by name
    walk.request(
        "POST", f"/api/v1/hosts/{CLI_MAC}/checkin", credential, json={"running_version": "0.1.0"}
    )
    walk.note_tokens()
    assert walk.tokens[API_MAC]


def routes() -> list[tuple[str, str]]:
    """(method, route) of every route of the application the server runs."""
    app = make_app(Context(None, Path("."), SETTINGS, None, None))  # type: ignore[arg-type]
    found = []
    for route in app.router.routes():
        assert route.resource is not None
        found.append((route.method, route.resource.canonical))
    return found


def path_of(route: str, mac: str) -> str:
    return route.replace("{mac}", mac).replace("{path}", f"pxelinux.cfg/01-{mac_dashes(mac)}")


def walk_routes(walk: Walk, *, writes: bool) -> None:
    """Every read route, or every write route with a body the server refuses (DELETE
    excepted: it is harmless only at the end), for both hosts."""
    for method, route in routes():
        if (method in ("GET", "HEAD")) == writes or method == "DELETE":
            continue
        for mac in (CLI_MAC, API_MAC):
            body = {"data": b"x"} if method == "PUT" else {"json": {"no-such-field": 1}}
            text = walk.request(method, path_of(route, mac), **(body if writes else {}))
            walk.replies.append((method, f"{route} of {mac}", text))


def walk_cli(walk: Walk) -> list[str]:
    """Every `list` and `show` command of the click tree that reads the registry, with and
    without --json; arguments filled in by name."""
    outputs = []
    commands: list[tuple[list[str], click.Command]] = []

    def collect(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                collect(sub, [*path, name])
        elif path[-1] in ("list", "show") and any(p.name == "directory" for p in command.params):
            commands.append((path, command))

    collect(main, [])
    assert {" ".join(p) for p, _ in commands} >= {"host list", "host show", "profile show"}
    # A pool to show (`pool show default`); `job show ID` is not walked: a job needs a host
    # that runs with an agent and a second registered version (tests/unit/test_jobs.py).
    made = netinstall(
        "pool", "create", "default", "--master", CLI_MAC, API_MAC, "--dir", str(walk.directory)
    )
    assert made.returncode == 0, made.stderr
    # An update to show (`update show ID`): the repository's example, added.
    example = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "updates_example"
    bundle = walk.directory / "example.update"
    built = netinstall("update", "build", str(example), "-o", str(bundle))
    assert built.returncode == 0, built.stderr
    assert netinstall("update", "add", str(bundle), "--dir", str(walk.directory)).returncode == 0
    fill = {
        "mac": [CLI_MAC, API_MAC],
        "name": ["default"],
        "job_id": [],
        "update_id": ["example-hotfix-1"],
    }
    for path, command in commands:
        arguments = [p.name for p in command.params if isinstance(p, click.Argument)]
        choices: list[list[str]] = [[]]
        for argument in arguments:
            assert argument in fill, f"no value for {' '.join(path)}'s {argument}"
            choices = [[*c, value] for c in choices for value in fill[argument]]
        has_json = any(p.name == "as_json" for p in command.params)
        for values in choices:
            for extra in (["--json"], []) if has_json else ([],):
                args = [*path, *values, *extra, "--dir", str(walk.directory)]
                done = netinstall(*args)
                assert done.returncode == 0, (shlex.join(args), done.stderr)
                outputs.append(done.stdout + done.stderr)
    return outputs


def test_no_secret_is_shown_or_stored_in_clear(
    walk: Walk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="netinstall")
    fake_install(walk)
    walk_routes(walk, writes=False)
    walk_routes(walk, writes=True)
    # Harmless valid writes: a password sent back as shown keeps the stored hash; new work.
    kept = walk.request(
        "PATCH",
        f"/api/v1/hosts/{API_MAC}",
        json={"variables": {"root_password": "<redacted>", "disk": "sda"}},
    )
    walk.replies.append(("PATCH", "/api/v1/hosts/{mac}", kept))
    walk.replies.append(("POST", "rearm", walk.request("POST", f"/api/v1/hosts/{CLI_MAC}/rearm")))
    walk.note_tokens()
    cli_outputs = walk_cli(walk)
    walk.replies.append(("DELETE", "host", walk.request("DELETE", f"/api/v1/hosts/{API_MAC}")))

    assert len(walk.tokens[CLI_MAC]) == 2  # the install's token and the rearm's
    secrets = walk.passwords_and_credentials()
    handed_out = 0
    for method, route, text in walk.replies:
        for secret in secrets:
            assert secret not in text, (method, route)
        for mac, tokens in walk.tokens.items():
            own_config = {f"{r} of {mac}" for r in BOOT_CONFIG_ROUTES}
            for token in tokens:
                if token in text:
                    assert (method, route in own_config) == ("GET", True), (method, route)
                    handed_out += 1
    assert handed_out >= 2  # the search finds what is there: the pending hosts' configs
    console = [
        text
        for method, route, text in walk.replies
        if method == "GET" and route.startswith("/ui/hosts/{mac} of")
    ]
    assert console, "the console's host pages were not searched"
    assert all("Install token" in text for text in console)  # a session's page, not the login
    everything = secrets + sorted(walk.all_tokens())
    for output in cli_outputs:
        for secret in everything:
            assert secret not in output
    assert "<redacted>" in "".join(cli_outputs)
    for secret in everything:
        assert secret not in caplog.text
    stored = registry_bytes(walk.directory)
    walk.server.stop()
    stored += registry_bytes(walk.directory)
    for secret in everything:
        assert secret.encode() not in stored, secret


def registry_bytes(directory: Path) -> bytes:
    files = [directory / (REGISTRY_FILE + suffix) for suffix in ("", "-wal")]
    return b"".join(f.read_bytes() for f in files if f.exists())
