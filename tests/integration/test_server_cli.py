"""`netinstall server|host|profile` through the installed console script, on a tmp directory."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pxe_server.model import State, Work
from tests.integration.conftest import NETINSTALL, netinstall

pytestmark = pytest.mark.integration

MAC = "52:54:00:12:34:56"


class Session:
    """Runs commands against one server directory and keeps every output for secret checks."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.outputs: list[str] = []
        self.seen: set[str] = set()  # every token the registry held after any command
        self.credentials: list[str] = []  # agent credentials handed out (only hashes stored)

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
        """The live install tokens (the registry unseals them), the API token (the
        operator's file) and the agent credentials handed out in this test."""
        from pxe_server.registry import Registry

        with Registry.open(self.directory) as registry:
            tokens = [h.token for h in registry.list_hosts() if h.token]
        api = (self.directory / "api-token").read_text("utf-8").strip()
        return [*tokens, api, *self.credentials]


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
    assert f"API token: {token_file} (kept)" in again
    assert token_file.read_text().strip() == token
    # The registry keeps only the token's keyed hash: a lost copy means a new token.
    token_file.unlink()
    lost = session.run("server", "init").stdout
    assert f"API token: {token_file} (missing, so a new one was written" in lost
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    new = token_file.read_text().strip()
    assert new != token
    from pxe_server.registry import Registry

    with Registry.open(directory) as registry:
        assert registry.api_token_matches(new)
        assert not registry.api_token_matches(token)
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


def test_a_san_profile_and_its_hosts_root_lun(tmp_path: Path, session: Session) -> None:
    template = tmp_path / "san.xml.j2"
    template.write_text("<installation/>\n")
    session.run("profile", "add", "san", "--template", str(template), "--san-boot", "--multipath")
    shown = session.run("profile", "show", "san").stdout
    assert "SAN boot:        iSCSI via net1" in shown
    assert "multipath:       yes" in shown
    session.fails("host", "add", MAC, "--profile", "san", expect="boots from a SAN")
    session.fails(
        "host", "add", MAC, "--profile", "san", "--san-target", "iscsi:10.0.0.1::3260:1",
        expect="RFC 4173",
    )  # fmt: skip
    session.fails("host", "add", MAC, "--san-address", "10.0.0.5/24", expect="need --san-target")
    lun = "iscsi:10.0.0.1::3260:1:iqn.2026-12.org.example:h1"
    added = session.run(
        "host", "add", MAC, "--profile", "san", "--san-target", lun,
        "--san-address", "10.0.0.5/24",
    )  # fmt: skip
    assert f"root LUN {lun}" in added.stdout
    shown = session.run("host", "show", MAC).stdout
    assert "root LUN:" in shown
    assert "storage NIC 10.0.0.5/24" in shown
    document = json.loads(session.run("host", "show", MAC, "--json").stdout)
    assert document["san"]["root_path"] == lun
    # one path: dropping multipath is allowed
    session.run("profile", "add", "san", "--template", str(template), "--update", "--san-boot")
    other = "52:54:00:12:34:99"
    second = lun.replace("10.0.0.1", "10.0.1.1")
    session.fails(
        "host", "add", other, "--profile", "san", "--san-target", lun, "--san-target", second,
        expect="has no multipath",
    )  # fmt: skip
    session.run("profile", "add", "san", "--template", str(template), "--update", "--san-boot",
                "--multipath")  # fmt: skip
    added = session.run(
        "host", "add", other, "--profile", "san", "--san-target", lun, "--san-target", second
    )
    assert f"root LUN {lun} + {second}" in added.stdout
    document = json.loads(session.run("host", "show", other, "--json").stdout)
    assert document["san"]["paths"] == [second]
    session.fails(
        "profile", "add", "san", "--template", str(template), "--update", "--san-boot",
        expect=f"host {other}: its root LUN has 2 paths",
    )  # fmt: skip


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
    refused = session.fails(
        "profile",
        "add",
        "x",
        "--template",
        str(template),
        "--kernel-args",
        "console=hvc0 sshpassword=ssh-pw-9",
        expect="may not carry sshpassword=",
    )
    assert "host variable root_password" in refused
    assert "ssh-pw-9" not in refused
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


# -- repositories, upgrade and restore, pools ------------------------------------------


def make_repo(directory: Path, version: str) -> Path:
    """A small install repository: the payload files and a .treeinfo naming ``version``."""
    from hypervisor_payload.treeinfo import TreeInfo, render_treeinfo

    files = ("boot/xen.gz", "boot/vmlinuz", "boot/initrd.img", "dom0-rootfs.tar.zst")
    for name in files:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(f"{name} {version}")
    info = TreeInfo(
        version=version,
        build="test",
        kernel=files[1],
        initrd=files[2],
        xen=files[0],
        archive=files[3],
        compression="zstd",
        checksums={name: "0" * 64 for name in files},
    )
    (directory / ".treeinfo").write_text(render_treeinfo(info))
    return directory


def installed_and_running(session: Session, mac: str, version: str = "0.1.0") -> None:
    """What the installer and the first boot would report: the host gets its agent."""
    from pxe_server.registry import Registry

    with Registry.open(session.directory) as registry:
        registry.record_event(mac, "installed")
        _, reply = registry.record_event(mac, "running", facts={"payload_version": version})
    session.credentials.append(str(reply["agent_credential"]))


@pytest.fixture
def versions(tmp_path: Path) -> Iterator[Session]:
    """A server initialised with repository 0.1.0 (the default); 0.2.0 built beside it."""
    session = Session(tmp_path / "srv")
    make_repo(tmp_path / "repo-0.1.0", "0.1.0")
    make_repo(tmp_path / "repo-0.2.0", "0.2.0")
    done = session.run("server", "init", "--repo", str(tmp_path / "repo-0.1.0"))
    assert "payload version: 0.1.0 (served at /repo/0.1.0/ and /repo/)" in done.stdout
    yield session
    everything = "\n".join(session.outputs)
    for secret in session.seen:
        assert secret not in everything


def test_repositories_add_and_list(tmp_path: Path, versions: Session) -> None:
    added = versions.run("server", "repo", "add", str(tmp_path / "repo-0.2.0")).stdout
    assert added.strip() == (
        f"added repository 0.2.0: {tmp_path / 'repo-0.2.0'} (served at /repo/0.2.0/)"
    )
    again = versions.run("server", "repo", "add", str(tmp_path / "repo-0.2.0")).stdout
    assert again.startswith("unchanged repository 0.2.0")
    listed = versions.run("server", "repo", "list").stdout.splitlines()
    assert listed[0].split() == ["VERSION", "DIRECTORY", "FILES", "DEFAULT"]
    assert listed[1].split() == ["0.1.0", str(tmp_path / "repo-0.1.0"), "5", "yes"]
    assert listed[2].split() == ["0.2.0", str(tmp_path / "repo-0.2.0"), "5"]
    document = json.loads(versions.run("server", "repo", "list", "--json").stdout)
    assert [(r["version"], r["files"], r["default"]) for r in document] == [
        ("0.1.0", 5, True),
        ("0.2.0", 5, False),
    ]
    # Another directory holding 0.2.0 needs --replace.
    copy = make_repo(tmp_path / "copy", "0.2.0")
    versions.fails("server", "repo", "add", str(copy), expect="give --replace")
    replaced = versions.run("server", "repo", "add", str(copy), "--replace").stdout
    assert replaced.startswith(f"replaced repository 0.2.0: {copy}")
    # init again keeps what is registered; the default stays the default.
    versions.run("server", "init")
    assert json.loads(versions.run("server", "repo", "list", "--json").stdout)[1]["directory"] == (
        str(copy)
    )


def test_repository_refusals(tmp_path: Path, versions: Session) -> None:
    (tmp_path / "empty").mkdir()
    versions.fails("server", "repo", "add", str(tmp_path / "empty"), expect="holds no .treeinfo")
    versions.fails("server", "repo", "add", str(tmp_path / "nope"), expect="no such directory")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / ".treeinfo").write_text("[general]\nversion = 1\n")
    versions.fails(
        "server", "repo", "add", str(tmp_path / "broken"), expect="cannot be read as a .treeinfo"
    )


def test_host_upgrade_and_restore(tmp_path: Path, versions: Session) -> None:
    versions.run("host", "add", MAC, "--name", "xen01")
    versions.fails(
        "host", "upgrade", MAC, "--version", "0.1.0", expect="has never reported running"
    )
    installed_and_running(versions, MAC)
    versions.fails("host", "upgrade", MAC, "--version", "0.2.0", expect="0.2.0 is not registered")
    versions.fails("host", "restore", "52:54:00:99:99:99", expect="no host 52:54:00:99:99:99")
    versions.run("server", "repo", "add", str(tmp_path / "repo-0.2.0"))
    before = versions.secrets()
    done = versions.run("host", "upgrade", MAC, "--version", "0.2.0", "--reboot", "manual")
    assert done.stdout.startswith(f"assigned {MAC} an upgrade to 0.2.0 (reboot manual): state")
    assert "netboot not armed" in done.stdout
    assert versions.secrets() != before  # a new install token; the credential is kept
    listed = versions.run("host", "list").stdout.splitlines()
    assert listed[0].split()[4:8] == ["STEP", "WORK", "ASSIGNED", "RUNNING"]
    assert listed[1].split()[:8] == [
        MAC,
        "xen01",
        "default",
        "pending",
        "(disarmed)",
        "-",
        "upgrade",
        "0.2.0",
    ]
    assert listed[1].split()[8] == "0.1.0"
    shown = versions.run("host", "show", MAC).stdout
    assert "work:             upgrade" in shown
    assert "reboot policy:    manual" in shown
    assert "agent credential: set" in shown
    document = json.loads(versions.run("host", "show", MAC, "--json").stdout)
    assert (document["work"], document["reboot_policy"], document["netboot_armed"]) == (
        "upgrade",
        "manual",
        False,
    )
    assert document["events"][-1]["message"] == "assigned: upgrade to 0.2.0 (reboot manual)"

    restored = versions.run("host", "restore", MAC).stdout
    assert restored.startswith(f"assigned {MAC} a restore from its backup partition (reboot auto)")
    hosts = json.loads(versions.run("host", "list", "--json").stdout)
    assert (hosts[0]["work"], hosts[0]["assigned_version"]) == ("restore", "0.2.0")
    versions.run("host", "rearm", MAC)
    assert json.loads(versions.run("host", "list", "--json").stdout)[0]["work"] == "install"


def _operator_signals() -> None:
    """In the child before exec: SIGINT as an operator's terminal has it. A test run
    started in the background by a non-interactive shell (CI's) ignores SIGINT, every
    child inherits that, and Python then installs no KeyboardInterrupt for it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pool_command(session: Session, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(NETINSTALL), "pool", "upgrade", "--dir", str(session.directory), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        preexec_fn=_operator_signals,  # noqa: PLW1509 - only a signal disposition, no threads' locks
    )


def play_hosts(session: Session, outcomes: dict[str, str], stop: threading.Event) -> None:
    """The agents and installers: each host given the upgrade reports through to running
    0.2.0, or ``failed`` when ``outcomes`` says so."""
    from pxe_server.registry import Registry

    with Registry.open(session.directory) as registry:
        while not stop.wait(0.05):
            for host in registry.list_hosts():
                if host.work is not Work.UPGRADE or host.state is not State.PENDING:
                    continue
                registry.check_in(host.mac, "0.1.0", "signalled")
                if outcomes.get(host.mac) == "failed":
                    registry.record_event(host.mac, "failed", step="download", message="no disk")
                    continue
                registry.record_event(host.mac, "installing", step="partition")
                registry.record_event(host.mac, "installed")
                facts = {"payload_version": "0.2.0"}
                _, reply = registry.record_event(host.mac, "running", facts=facts)
                session.credentials.extend(str(c) for c in reply.values() if isinstance(c, str))


@contextmanager
def job_runner(session: Session) -> Iterator[None]:
    """What every `server run` does beside its servers: run the jobs (pool upgrades)."""
    from pxe_server.job_runner import JobRunner
    from pxe_server.registry import Registry

    with Registry.open(session.directory) as registry:
        runner = JobRunner(registry, "the test's server", idle=0.1)
        runner.start()
        try:
            yield
        finally:
            runner.stop()


def rolling(
    tmp_path: Path, session: Session, outcomes: dict[str, str], *args: str
) -> tuple[int, str, str]:
    session.run("server", "repo", "add", str(tmp_path / "repo-0.2.0"))
    stop = threading.Event()
    player = threading.Thread(target=play_hosts, args=(session, outcomes, stop))
    player.start()
    try:
        with job_runner(session):
            process = pool_command(session, "--version", "0.2.0", "--poll", "0.1", *args)
            out, err = process.communicate(timeout=120)
    finally:
        stop.set()
        player.join(timeout=30)
    session.outputs += [out, err]
    assert "Traceback" not in err
    return process.returncode, out, err


POOL = [MAC, "52:54:00:00:00:02", "52:54:00:00:00:03"]


def test_pool_upgrade_master_first_then_one_at_a_time(tmp_path: Path, versions: Session) -> None:
    for mac in POOL:
        versions.run("host", "add", mac)
        installed_and_running(versions, mac)
    code, out, err = rolling(tmp_path, versions, {}, "--master", POOL[2], *POOL[:2])
    assert code == 0, (out, err)
    assert out.splitlines()[0].startswith("job 1: upgrade of 3 host(s) to 0.2.0 queued")
    assert out.splitlines()[-1].endswith("] pool upgraded: 3 host(s) run 0.2.0")
    assigned = [
        line.split("] ")[1].split()[0].rstrip(":")
        for line in out.splitlines()
        if "upgrade to 0.2.0 assigned" in line
    ]
    assert assigned == [POOL[2], POOL[0], POOL[1]]
    hosts = json.loads(versions.run("host", "list", "--json").stdout)
    assert [(h["running_version"], h["work"], h["state"]) for h in hosts] == [
        ("0.2.0", None, "running")
    ] * 3


def test_pool_upgrade_stops_at_the_first_failure(tmp_path: Path, versions: Session) -> None:
    for mac in POOL:
        versions.run("host", "add", mac)
        installed_and_running(versions, mac)
    code, out, err = rolling(tmp_path, versions, {POOL[1]: "failed"}, "--master", *POOL)
    assert code == 1, (out, err)
    assert err.strip() == (
        f"netinstall: pool upgrade stopped at {POOL[1]}: it failed; last state failed "
        f"(download), last message: no disk; upgraded: {POOL[0]}; not started: {POOL[2]}"
    )
    third = json.loads(versions.run("host", "show", POOL[2], "--json").stdout)
    assert (third["work"], third["running_version"]) == (None, "0.1.0")


def test_pool_upgrade_times_out(tmp_path: Path, versions: Session) -> None:
    versions.run("host", "add", MAC)
    installed_and_running(versions, MAC)
    versions.run("server", "repo", "add", str(tmp_path / "repo-0.2.0"))
    with job_runner(versions):
        process = pool_command(
            versions, "--version", "0.2.0", "--master", MAC, "--timeout", "1", "--poll", "0.2"
        )
        out, err = process.communicate(timeout=60)
    assert process.returncode == 1, (out, err)
    assert f"pool upgrade stopped at {MAC}: it timed out after" in err
    assert "last state pending" in err


def test_pool_upgrade_checks_everything_first(tmp_path: Path, versions: Session) -> None:
    versions.run("host", "add", MAC)
    done = versions.run(
        "pool", "upgrade", "--version", "0.9.0", "--master", MAC, MAC, "52:54:00:00:00:09", code=2
    )
    assert done.stderr.splitlines() == [
        "netinstall: version 0.9.0 is not registered; see `netinstall server repo list`",
        f"netinstall: host {MAC} has never reported running, so it has no agent to upgrade it",
        f"netinstall: {MAC} is given twice (already as the master)",
        "netinstall: no host 52:54:00:00:00:09 in the registry",
    ]
    versions.fails(
        "pool", "upgrade", "--version", "0.1.0", "--master", MAC, "--poll", "0", expect="--poll '0'"
    )
    assert json.loads(versions.run("host", "show", MAC, "--json").stdout)["work"] == "install"


def test_named_pools_and_their_upgrade_as_a_job(tmp_path: Path, versions: Session) -> None:
    for mac in POOL:
        versions.run("host", "add", mac)
        installed_and_running(versions, mac)
    versions.run("server", "repo", "add", str(tmp_path / "repo-0.2.0"))
    created = versions.run("pool", "create", "rack1", "--master", POOL[1], POOL[0]).stdout
    assert created.strip() == f"created pool rack1: 2 host(s), master {POOL[1]}"
    versions.fails("pool", "create", "rack2", "--master", POOL[2], POOL[0],
                   expect=f"host {POOL[0]} is in pool rack1 already")  # fmt: skip
    shown = versions.run("pool", "add", "rack1", POOL[2]).stdout
    assert shown.splitlines() == [
        f"pool rack1: master {POOL[1]}",
        f"  1. {POOL[0]}",
        f"  2. {POOL[2]}",
    ]
    versions.run("pool", "remove", "rack1", POOL[2])
    versions.fails("pool", "remove", "rack1", POOL[1], expect="is the master of pool rack1")
    versions.fails("host", "remove", POOL[1], expect="is the master of pool rack1")
    listed = versions.run("pool", "list").stdout.splitlines()
    assert listed[1].split() == ["rack1", POOL[1], "1", "-"]
    versions.fails("pool", "upgrade", "rack1", expect="give the version to upgrade pool rack1 to")
    versions.fails("pool", "upgrade", "nope", "0.2.0", expect="no pool 'nope'")
    versions.fails("pool", "upgrade", "rack1", "0.2.0", "--poll", "0.01",
                   expect="field 'poll' must be a number between 0.05 and 600")  # fmt: skip
    # queued (no server runs it yet): the job's number only, and one job per pool
    job = versions.run("pool", "upgrade", "rack1", "0.2.0", "--no-follow").stdout.strip()
    assert job == "1"
    versions.fails(
        "pool", "upgrade", "rack1", "0.2.0", expect="pool rack1 has job 1 queued already"
    )
    versions.fails("pool", "upgrade", "--version", "0.2.0", "--master", POOL[0],
                   expect=f"host {POOL[0]} is in job 1 (queued) already")  # fmt: skip
    versions.fails("pool", "delete", "rack1", expect="pool rack1 has job 1 queued; cancel it")
    assert "rack1" in versions.run("job", "list").stdout
    assert json.loads(versions.run("pool", "show", "rack1", "--json").stdout)["job"] == 1
    # a server takes it; the hosts' agents report; `job follow` prints it to its end
    stop = threading.Event()
    player = threading.Thread(target=play_hosts, args=(versions, {}, stop))
    player.start()
    try:
        with job_runner(versions):
            followed = versions.run("job", "follow", "1").stdout.splitlines()
    finally:
        stop.set()
        player.join(timeout=30)
    assert followed[-1].endswith("] pool upgraded: 2 host(s) run 0.2.0")
    document = json.loads(versions.run("job", "show", "1", "--json").stdout)
    assert (document["state"], document["pool"]) == ("done", "rack1")
    assert [(h["mac"], h["state"]) for h in document["hosts"]] == [
        (POOL[1], "done"), (POOL[0], "done"),
    ]  # fmt: skip
    assert document["started_by"].endswith(" (local)")
    shown = versions.run("job", "show", "1").stdout
    assert "state:           done" in shown
    versions.fails("job", "cancel", "1", expect="job 1 is done already")
    versions.fails("job", "show", "9", expect="no job 9")
    versions.fails("job", "show", "x", expect="a job is named by its number")
    # a queued job cancelled never runs; the pool may go once no job works on it
    versions.run("pool", "upgrade", "rack1", "0.2.0", "--no-follow")
    assert versions.run("job", "cancel", "2").stdout.strip() == "job 2 cancelled"
    versions.run("pool", "delete", "rack1")
    versions.fails("pool", "show", "rack1", expect="no pool 'rack1'")


def test_ctrl_c_stops_following_not_the_job(tmp_path: Path, versions: Session) -> None:
    versions.run("host", "add", MAC)
    installed_and_running(versions, MAC)
    versions.run("server", "repo", "add", str(tmp_path / "repo-0.2.0"))
    process = pool_command(versions, "--version", "0.2.0", "--master", MAC)
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("job 1: upgrade of 1 host(s) to 0.2.0 queued")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, (out, err)
    assert err.strip() == (
        "stopped following job 1; it goes on: `netinstall job follow 1`, `netinstall job cancel 1`"
    )
    assert json.loads(versions.run("job", "show", "1", "--json").stdout)["state"] == "queued"


def test_a_profile_in_use_is_not_removed(tmp_path: Path, session: Session) -> None:
    template = tmp_path / "t.xml.j2"
    template.write_text("<installation/>")
    session.run("profile", "add", "p2", "--template", str(template))
    session.run("host", "add", MAC, "--profile", "p2")
    session.fails("profile", "remove", "p2", expect="profile 'p2' is used by 1 host(s)")
    session.fails("profile", "remove", "nope", expect="no profile 'nope'")
    session.fails("profile", "remove", "default", expect="the default profile cannot be removed")
    session.run("host", "remove", MAC)
    assert session.run("profile", "remove", "p2").stdout.strip() == "removed profile p2"
    assert [p["name"] for p in json.loads(session.run("profile", "list", "--json").stdout)] == [
        "default"
    ]
