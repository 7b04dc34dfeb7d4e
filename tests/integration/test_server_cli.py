"""`netinstall server|host|profile` through the installed console script, on a tmp directory."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import NETINSTALL, netinstall

pytestmark = pytest.mark.integration

MAC = "52:54:00:12:34:56"


class Session:
    """Runs commands against one server directory and keeps every output for secret checks."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.outputs: list[str] = []
        self.seen: set[str] = set()  # every token the registry held after any command

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = netinstall(*args, "--dir", str(self.directory))
        self.outputs += [done.stdout, done.stderr]
        if (self.directory / "registry.sqlite").exists():
            self.seen.update(self.secrets())
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done

    def fails(self, *args: str, expect: str) -> str:
        """A bad input: exit 2, one line on stderr that says what is wrong."""
        done = self.run(*args, code=2)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("netinstall: ")
        assert expect in lines[0]
        return lines[0]

    def secrets(self) -> list[str]:
        conn = sqlite3.connect(self.directory / "registry.sqlite")
        try:
            rows = conn.execute("SELECT token, agent_credential FROM hosts").fetchall()
            api = conn.execute("SELECT value FROM secrets").fetchall()
        finally:
            conn.close()
        return [s for row in rows + api for s in row if s]


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    session = Session(tmp_path / "srv")
    repo, netboot = tmp_path / "repo", tmp_path / "netboot"
    repo.mkdir()
    netboot.mkdir()
    session.run("server", "init", "--repo", str(repo), "--netboot", str(netboot))
    yield session
    everything = "\n".join(session.outputs)
    assert len(session.seen) >= 1
    for secret in session.seen:
        assert secret not in everything


def test_init_creates_the_directory_and_is_idempotent(tmp_path: Path, session: Session) -> None:
    directory = session.directory
    first = session.outputs[0]
    assert f"initialised {directory}" in first
    assert f"API token: {directory / 'api-token'}" in first
    assert f"repo: {tmp_path / 'repo'}" in first
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    token_file = directory / "api-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert token not in first

    again = session.run("server", "init").stdout
    assert "already initialised" in again
    assert f"repo: {tmp_path / 'repo'}" in again
    assert token_file.read_text().strip() == token
    profiles = json.loads(session.run("profile", "list", "--json").stdout)
    assert [p["name"] for p in profiles] == ["default"]


def test_init_takes_build_defaults_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "build" / "repo").mkdir(parents=True)
    done = subprocess.run(
        [str(NETINSTALL), "server", "init", "srv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert f"repo: {tmp_path / 'build' / 'repo'}" in done.stdout
    assert "netboot: not set" in done.stdout


def test_hosts_add_list_show_rearm_remove(session: Session) -> None:
    added = session.run(
        "host", "add", "52-54-00-12-34-56", "--name", "xen01", "--var", "root_password=pw-123"
    )
    assert f"added {MAC}" in added.stdout
    session.run("host", "add", "52:54:00:00:00:02", "--var", "disk=nvme0n1")

    listed = session.run("host", "list").stdout
    assert listed.splitlines()[0].split()[:4] == ["MAC", "NAME", "PROFILE", "STATE"]
    assert MAC in listed
    assert "added to the registry" in listed
    hosts = json.loads(session.run("host", "list", "--json").stdout)
    assert [h["mac"] for h in hosts] == ["52:54:00:00:00:02", MAC]
    assert hosts[1]["state"] == "pending"
    assert hosts[1]["token"] == "set"
    assert hosts[1]["variables"] == {"root_password": "<redacted>"}

    shown = session.run("host", "show", MAC).stdout
    assert "install token:    set" in shown
    assert "state:            pending, netboot armed" in shown
    assert "pw-123" not in "\n".join(session.outputs)
    document = json.loads(session.run("host", "show", MAC, "--json").stdout)
    assert document["name"] == "xen01"
    assert [e["state"] for e in document["events"]] == ["pending"]

    before = session.secrets()
    rearmed = session.run("host", "rearm", MAC).stdout
    assert f"rearmed {MAC}: state pending" in rearmed
    assert session.secrets() != before
    events = json.loads(session.run("host", "show", MAC, "--json").stdout)["events"]
    assert [e["message"] for e in events] == ["added to the registry", "rearmed: new install work"]

    assert session.run("host", "remove", MAC).stdout.strip() == f"removed {MAC}"
    assert [h["mac"] for h in json.loads(session.run("host", "list", "--json").stdout)] == [
        "52:54:00:00:00:02"
    ]


def test_profiles_add_list_show(tmp_path: Path, session: Session) -> None:
    template = tmp_path / "lab.xml.j2"
    template.write_text("<installation>{{ repo_url }}</installation>\n")
    added = session.run(
        "profile",
        "add",
        "lab",
        "--template",
        str(template),
        "--chain",
        "ipxe",
        "--payload-version",
        "0.2.0",
        "--xen-args",
        "dom0_mem=1024M",
    )
    assert "added profile lab (chain ipxe)" in added.stdout
    session.run("host", "add", MAC, "--profile", "lab")
    listed = session.run("profile", "list").stdout.splitlines()
    assert listed[0].split() == ["NAME", "CHAIN", "PAYLOAD", "HOSTS"]
    assert listed[2].split() == ["lab", "ipxe", "0.2.0", "1"]
    shown = session.run("profile", "show", "lab").stdout
    assert "xen args:        dom0_mem=1024M" in shown
    assert shown.endswith("<installation>{{ repo_url }}</installation>\n")
    document = json.loads(session.run("profile", "show", "default", "--json").stdout)
    assert document["boot_chain"] == "seed"
    assert "<primary-disk>" in document["template"]
    host = json.loads(session.run("host", "show", MAC, "--json").stdout)
    assert host["assigned_version"] == "0.2.0"

    template.write_text("<installation/>\n")
    session.run("profile", "add", "lab", "--template", str(template), "--update")
    assert session.run("profile", "show", "lab").stdout.endswith("<installation/>\n")


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, session: Session) -> None:
    broken = tmp_path / "broken.j2"
    broken.write_text("{% if x %}never closed\n")
    session.fails("host", "add", "52:54:00", expect="'52:54:00' is not a MAC address")
    session.fails("host", "add", MAC, "--profile", "nope", expect="no profile 'nope'")
    session.fails("host", "add", MAC, "--var", "novalue", expect="--var 'novalue' is not KEY=VALUE")
    session.fails("host", "add", MAC, "--name", "a.b.c", expect="not an FQDN")
    session.run("host", "add", MAC)
    session.fails("host", "add", MAC, expect="exists already")
    session.fails("host", "show", "52:54:00:99:99:99", expect="no host 52:54:00:99:99:99")
    session.fails("host", "rearm", "52:54:00:99:99:99", expect="no host")
    session.fails("host", "remove", "52:54:00:99:99:99", expect="no host")
    session.fails("profile", "show", "nope", expect="no profile 'nope'")
    session.fails("profile", "add", "x", "--template", str(broken), expect="does not parse")
    session.fails(
        "profile", "add", "x", "--template", str(tmp_path / "missing"), expect="cannot read"
    )
    template = tmp_path / "ok.j2"
    template.write_text("<installation/>")
    session.fails(
        "profile", "add", "x", "--template", str(template), "--chain", "pxe", expect="--chain"
    )
    session.fails("profile", "add", "default", "--template", str(template), expect="exists already")
    session.fails("server", "run", "--dhcp", "full", "--interface", "eth0", expect="--range")
    session.fails("server", "run", "--dhcp", "proxy", expect="--interface")
    session.fails("server", "run", "--dhcp", "maybe", expect="--dhcp 'maybe'")
    session.fails("server", "run", "--tftp-port", "70000", expect="--tftp-port")
    session.fails("server", "run", "--bind", "example", expect="--bind 'example'")
    session.fails(
        "server",
        "run",
        "--dhcp",
        "full",
        "--interface",
        "eth0",
        "--range",
        "10.0.0.9,10.0.0.1",
        expect="--range",
    )
    session.fails("server", "init", "--repo", str(tmp_path / "nope"), expect="no such directory")


def test_commands_on_a_directory_without_a_registry(tmp_path: Path) -> None:
    empty = Session(tmp_path / "empty")
    line = empty.fails("host", "list", expect="holds no registry")
    assert "netinstall server init" in line
    empty.fails("server", "run", expect="holds no registry")
    assert not (tmp_path / "empty").exists()
