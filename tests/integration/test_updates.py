"""Updates against a real ``server run`` (issue 21): three simulated hosts (their installs
and their agents' check-ins as HTTP requests, as two_servers.py's BootClient sends them;
no QEMU) in a pool, an update added, prechecked and applied as a job, master first, one
host at a time, stopping at the first failure. On SQLite and on PostgreSQL.

The simulated agent does what the dom0 agent does with an update, but for dpkg and the
files: it downloads the bundle with its credential and verifies its signature with the
real ``ssh-keygen -Y verify`` against the key the check-in reply handed it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.errors import CommandError
from common.process import Completed, run
from common.update_bundle import SIGNATURE_NAMESPACE, SIGNER, read_bundle
from hypervisor_payload.updates import build_update
from tests.integration.conftest import netinstall
from tests.integration.two_servers import PAYLOAD, VERSION, BootClient, Running, request, serving
from tests.repository import write_repository

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "updates_example"
MACS = ("52:54:00:21:00:01", "52:54:00:21:00:02", "52:54:00:21:00:03")
JOB_TIMEOUT = 120.0  # seconds a job may take here at most (a busy 2-core machine)


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    files = {name: name.encode() for name in PAYLOAD}
    repo = write_repository(tmp_path / "repo", files, VERSION, "b1")
    netboot = tmp_path / "netboot"
    netboot.mkdir()
    directory = tmp_path / "srv"
    db: tuple[str, ...] = ()
    if request.param == "postgresql":
        db = ("--db", request.getfixturevalue("postgres_url"))
    done = netinstall("server", "init", str(directory), "--repo", str(repo), *db,
                      "--netboot", str(netboot), "--advertise", "127.0.0.1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    for mac in MACS:
        added = netinstall("host", "add", mac, "--dir", str(directory), "--var", "disk=vda")
        assert added.returncode == 0, added.stderr
    with serving(directory, tmp_path / "server.log") as running:
        yield running


def cli(server: Running, *args: str) -> subprocess.CompletedProcess[str]:
    """``netinstall --server URL ARGS``: the operator over the API."""
    token = server.directory / "api-token"
    return netinstall("--server", server.url, "--token-file", str(token), *args)


@dataclass
class Agent:
    """A host's agent: check-ins with the update fields, an update log of its own."""

    host: BootClient
    port: int
    fail: bool = False  # report failed for any update
    applied: list[str] = field(default_factory=list)
    result: dict[str, str] | None = None
    key: str | None = None
    offered: list[str] = field(default_factory=list)  # update ids, as the replies named them

    def checkin(self) -> dict[str, object]:
        body: dict[str, object] = {
            "running_version": VERSION,
            "state": "running",
            "updates": self.applied,
            "free_mib": 4096,
            "boot_id": "boot-1",
        }
        if self.result is not None:
            body["update_result"] = self.result
        reply = request(self.port, "POST", f"{self.host.api}/checkin",
                        secret=self.host.credential, body=body)  # fmt: skip
        assert reply.status == 200, reply
        self.result = None
        found = reply.json()
        self.key = self.key or str(found["update_key"])
        return found

    def step(self) -> None:
        """One check-in; an update it names is fetched, verified and applied (or failed)."""
        work = self.checkin().get("update")
        if not isinstance(work, dict):
            return
        update_id = str(work["id"])
        self.offered.append(update_id)
        if self.fail:
            self.result = {"id": update_id, "outcome": "failed", "reason": "dpkg said no"}
        else:
            self.verify(work)
            self.applied.append(update_id)
            self.result = {"id": update_id, "outcome": "applied"}
        self.checkin()

    def verify(self, work: dict[str, object]) -> None:
        path = str(work["url"]).split("127.0.0.1", 1)[1].split(":", 1)[1].split("/", 1)[1]
        got = request(self.port, "GET", f"/{path}", secret=self.host.credential)
        assert got.status == 200, got
        assert len(got.body) == work["size"]
        with tempfile.TemporaryDirectory() as scratch:
            bundle_file = Path(scratch) / "b.update"
            bundle_file.write_bytes(got.body)
            bundle = read_bundle(bundle_file)
            assert bundle.signature is not None
            (Path(scratch) / "sig").write_bytes(bundle.signature)
            words = str(self.key).split()
            allowed = f'{SIGNER} namespaces="{SIGNATURE_NAMESPACE}" {words[0]} {words[1]}\n'
            (Path(scratch) / "allowed").write_text(allowed)
            argv = ["ssh-keygen", "-Y", "verify", "-f", f"{scratch}/allowed", "-I", SIGNER,
                    "-n", SIGNATURE_NAMESPACE, "-s", f"{scratch}/sig"]  # fmt: skip
            checked = subprocess.run(argv, input=bundle.metadata, capture_output=True, check=False)
            assert checked.returncode == 0, checked.stderr
            tampered = subprocess.run(argv, input=bundle.metadata + b" ", capture_output=True,
                                      check=False)  # fmt: skip
            assert tampered.returncode != 0


def install(server: Running, host: BootClient) -> None:
    """One install over HTTP up to running: the host gets its agent credential."""
    port = server.http_port
    token = host.token_of(host.boot_config(port))
    assert token is not None
    assert host.enrol(port, token).status == 200
    assert host.answer_file(port).status == 200
    for state in ("installing", "installed"):
        assert host.event(port, state).status == 200
    reply = host.event(port, "running", facts={"payload_version": VERSION})
    assert reply.status == 200, reply
    host.credential = str(reply.json()["agent_credential"])


def hosts_up(server: Running, fail: str | None = None) -> list[Agent]:
    agents = []
    for mac in MACS:
        host = BootClient(mac)
        install(server, host)
        agent = Agent(host, server.http_port, fail=mac == fail)
        agent.checkin()  # an agent that knows updates: the precheck needs its facts
        agents.append(agent)
    return agents


def run_job(server: Running, agents: list[Agent], job: int) -> dict[str, object]:
    """Every agent checks in, in turn, until the job ends; the job's record."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        for agent in agents:
            agent.step()
        shown = cli(server, "job", "show", str(job), "--json")
        assert shown.returncode == 0, shown.stderr
        record = json.loads(shown.stdout)
        if record["state"] not in ("queued", "running"):
            return dict(record)
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not end within {JOB_TIMEOUT} s")


def source_for(tmp_path: Path, update_id: str) -> Path:
    """The example update as ``update_id``, for the payload version the hosts here run."""
    source = tmp_path / update_id
    shutil.copytree(EXAMPLE, source)
    toml = (source / "update.toml").read_text().replace("example-hotfix-1", update_id)
    toml = toml.replace('applies_to = ["0.1.0"]', f'applies_to = ["{VERSION}"]')
    (source / "update.toml").write_text(toml)
    return source


def added(server: Running, tmp_path: Path, update_id: str) -> str:
    source = source_for(tmp_path, update_id)
    _meta, bundle = build_update(source, tmp_path / f"{source.name}.update")
    done = cli(server, "update", "add", str(bundle))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_an_update_goes_to_the_master_first_then_one_host_at_a_time(
    server: Running, tmp_path: Path
) -> None:
    agents = hosts_up(server)
    assert netinstall("pool", "create", "rack", *MACS[1:], "--master", MACS[0],
                      "--dir", str(server.directory)).returncode == 0  # fmt: skip
    update_id = added(server, tmp_path, "hotfix-1")
    assert update_id == "hotfix-1"
    checked = cli(server, "update", "precheck", update_id, "--pool", "rack", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert [h["ok"] for h in json.loads(checked.stdout)["hosts"]] == [True, True, True]

    started = cli(server, "update", "apply", update_id, "--pool", "rack", "--poll", "0.2",
                  "--no-follow")  # fmt: skip
    assert started.returncode == 0, started.stderr
    job = run_job(server, agents, int(started.stdout))
    assert job["state"] == "done", job
    # Master first, then each member, each only once the one before had it applied.
    lines = [line["text"] for line in job["log"]]  # type: ignore[attr-defined]
    given = [line for line in lines if line.endswith(f"{update_id} given")]
    assert given == [f"{MACS[0]} (master): {update_id} given"] + [
        f"{mac}: {update_id} given" for mac in MACS[1:]
    ]
    had = [f"{MACS[0]} (master): has {update_id}"] + [f"{m}: has {update_id}" for m in MACS[1:]]
    for done, following in zip(had, given[1:], strict=False):
        assert lines.index(done) < lines.index(following)
    assert [a.offered for a in agents] == [[update_id]] * 3

    listed = cli(server, "update", "list", "--json")
    (record,) = json.loads(listed.stdout)
    assert [(h["mac"], h["state"]) for h in record["hosts"]] == [(m, "applied") for m in MACS]
    shown = json.loads(cli(server, "host", "show", MACS[2], "--json").stdout)
    assert shown["facts"]["updates"] == [update_id]  # what its agent says its disk has
    lines = cli(server, "host", "show", MACS[2]).stdout.splitlines()
    assert f"{'updates:':<18}{update_id}" in lines

    again = cli(server, "update", "apply", update_id, "--pool", "rack", "--poll", "0.2",
                "--no-follow")  # fmt: skip
    job = run_job(server, agents, int(again.stdout))
    assert job["state"] == "done"
    assert [h["state"] for h in job["hosts"]] == ["skipped"] * 3  # type: ignore[index]
    assert [a.offered for a in agents] == [[update_id]] * 3  # a second apply: a no-op


def test_the_job_stops_at_the_first_failure_and_names_the_hosts_not_started(
    server: Running, tmp_path: Path
) -> None:
    agents = hosts_up(server, fail=MACS[1])
    update_id = added(server, tmp_path, "hotfix-2")
    started = cli(server, "update", "apply", update_id, "--host", MACS[0], "--host", MACS[1],
                  "--host", MACS[2], "--poll", "0.2", "--no-follow")  # fmt: skip
    assert started.returncode == 0, started.stderr
    job = run_job(server, agents, int(started.stdout))
    assert job["state"] == "failed"
    assert job["reason"] == (
        f"stopped at {MACS[1]}: it failed: dpkg said no; updated: {MACS[0]}; not started: {MACS[2]}"
    )
    states = [h["state"] for h in job["hosts"]]  # type: ignore[index]
    assert states == ["done", "failed", "not-started"]
    assert agents[2].offered == []
    shown = json.loads(cli(server, "update", "show", update_id, "--json").stdout)
    assert {h["mac"]: h["state"] for h in shown["hosts"]} == {
        MACS[0]: "applied",
        MACS[1]: "failed",
    }
    assert shown["hosts"][1]["reason"] == "dpkg said no"


def test_a_bad_bundle_is_refused_and_nothing_is_kept(server: Running, tmp_path: Path) -> None:
    _meta, bundle = build_update(EXAMPLE, tmp_path / "x.update")
    data = bytearray(bundle.read_bytes())
    at = data.index(b"post-apply ran")
    data[at : at + 4] = b"POST"
    bundle.write_bytes(bytes(data))
    done = cli(server, "update", "add", str(bundle))
    assert done.returncode == 2
    assert done.stderr.strip().endswith("sha256 mismatch for post-apply.sh")
    assert cli(server, "update", "list").stdout.strip() == "no updates"
    assert [p.name for p in (server.directory / "updates").iterdir()] == []


# -- the dom0 agent's own code against the server --------------------------------------------


@dataclass
class DomRunner:
    """dom0's commands for an agent whose root is a temporary directory: ``ssh-keygen``
    runs for real (the signature is checked by the tool dom0 uses); dpkg, chroot and
    journalctl are recorded (they would change this machine), multipathd is absent."""

    calls: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], **kwargs: Any) -> Completed:
        args = tuple(str(a) for a in argv)
        if args[0] == "ssh-keygen":
            return run(args, **kwargs)
        if args[0] == "multipathd":
            raise CommandError(args, 127, "", "multipathd: command not found")
        self.calls.append(args)
        return Completed(args, 0, "", "")


def dom0_agent(server: Running, mac: str, root: Path) -> Any:
    """The dom0 agent (``netinstall_dom0.agent.Agent``) of host ``mac``, its files under
    ``root``, talking to the server with ``requests`` as in dom0."""
    import requests

    dom0 = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "dom0"
    if str(dom0) not in sys.path:
        sys.path.insert(0, str(dom0))
    from netinstall_dom0.agent import Agent
    from netinstall_dom0.config import AgentConfig
    from netinstall_dom0.layout import Layout
    from netinstall_dom0.server import ServerClient

    host = BootClient(mac)
    install(server, host)
    (root / "etc").mkdir(parents=True)
    (root / "etc/netinstall-release").write_text(f"VERSION={VERSION}\n")
    base = f"http://127.0.0.1:{server.http_port}"
    config = AgentConfig(base, mac, str(host.credential), checkin_interval=60)
    session = requests.Session()
    return Agent(config, ServerClient(base, mac, session), DomRunner(), Layout(root))


def follow(server: Running, agent: Any, job: int) -> dict[str, object]:
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        agent.checkin_once()
        record = json.loads(cli(server, "job", "show", str(job), "--json").stdout)
        if record["state"] not in ("queued", "running"):
            return dict(record)
        time.sleep(0.3)
    raise AssertionError(f"job {job} did not end within {JOB_TIMEOUT} s")


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_the_dom0_agent_fetches_verifies_and_applies_an_update(
    server: Running, tmp_path: Path
) -> None:
    root = tmp_path / "dom0"
    agent = dom0_agent(server, MACS[0], root)
    agent.checkin_once()  # it gets the update key and tells the server it knows updates
    key = (root / "etc/netinstall/update-key.pub").read_text()
    assert key.startswith("ssh-ed25519 ")
    update_id = added(server, tmp_path, "hotfix-1")
    started = cli(server, "update", "apply", update_id, "--host", MACS[0], "--poll", "0.2",
                  "--no-follow")  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    job = follow(server, agent, int(started.stdout))
    assert job["state"] == "done", job
    conf = (root / "etc/netinstall/hotfix-example.conf").read_text()
    assert "hotfix = example-hotfix-1" in conf
    assert (root / "etc/netinstall-updates" / update_id).read_text() == "1.0-hotfix1\n"
    (script,) = [c for c in agent.runner.calls if c[0] == "chroot"]
    assert script[2:3] == ("/bin/sh",)
    shown = json.loads(cli(server, "update", "show", update_id, "--json").stdout)
    assert [(h["mac"], h["state"]) for h in shown["hosts"]] == [(MACS[0], "applied")]
    before = list(agent.runner.calls)
    agent.checkin_once()  # nothing more to do
    assert agent.runner.calls == before


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_a_bundle_the_host_cannot_verify_fails_with_a_log_bundle(
    server: Running, tmp_path: Path
) -> None:
    root = tmp_path / "dom0"
    agent = dom0_agent(server, MACS[1], root)
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")]
    subprocess.run(keygen, check=True, capture_output=True)
    (root / "etc/netinstall").mkdir(parents=True)
    shutil.copyfile(tmp_path / "other.pub", root / "etc/netinstall/update-key.pub")
    agent.checkin_once()  # the server's key is offered, and refused: the host holds one
    update_id = added(server, tmp_path, "hotfix-3")
    started = cli(server, "update", "apply", update_id, "--host", MACS[1], "--poll", "0.2",
                  "--no-follow")  # fmt: skip
    job = follow(server, agent, int(started.stdout))
    assert job["state"] == "failed"
    assert "signature does not verify" in str(job["reason"])
    assert not (root / "etc/netinstall/hotfix-example.conf").exists()
    assert not (root / "etc/netinstall-updates").exists()
    logs = cli(server, "host", "logs", MACS[1])
    assert logs.returncode == 0, logs.stderr
    assert ".tar.bz2" in logs.stdout
