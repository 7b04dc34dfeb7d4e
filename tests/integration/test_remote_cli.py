"""The CLI over the API: the same commands on a server directory and, with ``--server``,
over HTTPS against a real server (in this process, TLS from a throwaway CA), with the
same output; and every client-side failure one sentence, never a traceback."""

from __future__ import annotations

import http.server
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from netinstall.api_client import ApiClient, RemoteError, endpoint
from netinstall.cli import main
from pxe_server.log_bundles import log_dir
from pxe_server.server import Server, TlsFiles
from tests.pki import Pki, make_pki
from tests.repository import write_repository

pytestmark = pytest.mark.integration

MAC = "52:54:00:00:00:01"
PAYLOAD = ("boot/vmlinuz", "boot/initrd.img", "boot/xen.gz", "dom0-rootfs.tar.zst")
TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<installation mode="fresh">
  <primary-disk>{{ disk | default("vda") | e }}</primary-disk>
  <source type="url">{{ repo_url | e }}</source>
  <admin-interface name="eth0" proto="dhcp"/>
  <timezone>Etc/UTC</timezone>
</installation>
"""


@dataclass
class Result:
    code: int
    out: str
    err: str


def invoke(argv: Sequence[str], env: dict[str, str | None] | None = None) -> Result:
    done = CliRunner().invoke(main, list(argv), env=env, catch_exceptions=False)
    return Result(done.exit_code, done.stdout, done.stderr)


@dataclass
class Twins:
    """Two server directories made alike: ``local`` used directly, ``remote`` served over
    HTTPS; ``run`` runs one command on each and gives both results."""

    local: Path
    remote: Path
    server: Server
    pki: Pki

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.tls_port}"

    def over_api(self, *args: str, env: dict[str, str | None] | None = None) -> Result:
        token = str(self.remote / "api-token")
        argv = ["--server", self.url, "--token-file", token, "--ca-file", str(self.pki.ca), *args]
        return invoke(argv, env={"NETINSTALL_SERVER": None, **(env or {})})

    def here(self, *args: str) -> Result:
        return invoke([*args, "--dir", str(self.local)], env={"NETINSTALL_SERVER": None})

    def same(self, *args: str) -> Result:
        """``args`` both ways: exit code, stdout and stderr alike (times, and the remote
        server's HTTP port in a rendered URL, normalised)."""
        mine, theirs = self.here(*args), self.over_api(*args)
        for result in (mine, theirs):
            assert "Traceback" not in result.err, (args, result.err)
        port = str(self.server.http_port)
        shown = [(r.code, normalised(r.out, port), normalised(r.err, port)) for r in (mine, theirs)]
        assert shown[0] == shown[1], args
        return mine


def normalised(text: str, port: str) -> str:
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<time>", text)
    text = re.sub(r'("(?:time|token_expires|last_checkin)": )[0-9.]+', r"\1<epoch>", text)
    return text.replace(f"127.0.0.1:{port}", "127.0.0.1:8080")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def twins(tmp_path: Path, pki: Pki) -> Iterator[Twins]:
    files = {name: name.encode() for name in PAYLOAD}
    repo = write_repository(tmp_path / "repo", files, "1.0", "b1")
    netboot = tmp_path / "netboot"
    netboot.mkdir()
    dirs = [tmp_path / "local", tmp_path / "remote"]
    for where in dirs:
        done = invoke(["server", "init", str(where), "--repo", str(repo),
                       "--netboot", str(netboot), "--advertise", "127.0.0.1"])  # fmt: skip
        assert done.code == 0, done.err
    tls = TlsFiles(pki.cert, pki.key, 0)
    server = Server(dirs[1], bind="127.0.0.1", tftp_port=0, http_port=0, tls=tls)
    with server:
        yield Twins(dirs[0], dirs[1], server, pki)


def test_every_operator_command_says_the_same_here_and_over_the_api(
    twins: Twins, tmp_path: Path
) -> None:
    template = tmp_path / "p2.xml.j2"
    template.write_text(TEMPLATE)
    same = twins.same
    assert same("host", "list").out.startswith("no hosts")
    added = same("host", "add", MAC, "--name", "web1", "--var", "disk=vda",
                 "--var", "root_password=pa55word")  # fmt: skip
    assert added.out == f"added {MAC}: profile default, state pending, netboot armed\n"
    assert "exists already" in same("host", "add", MAC).err
    assert "multicast" in same("host", "add", "01:00:5e:00:00:01").err
    assert "is given twice" in same("host", "add", "52:54:00:00:00:02", "--var", "a=1",
                                    "--var", "a=2").err  # fmt: skip
    assert "no profile" in same("host", "add", "52:54:00:00:00:03", "--profile", "nope").err
    listed = same("host", "list")
    assert MAC in listed.out
    assert "added to the registry" in listed.out
    same("host", "list", "--json")
    shown = same("host", "show", MAC)
    assert "root_password=<redacted>" in shown.out
    same("host", "show", MAC, "--json")
    assert same("host", "show", "52:54:00:99:99:99").err == (
        "netinstall: no host 52:54:00:99:99:99 in the registry\n"
    )
    # the log bundles the host's installer uploaded (none yet, then one in each directory)
    assert "has no log bundles" in same("host", "logs", MAC).out
    bundle = "20260101T120000.000001Z.tar.bz2"
    for where in (twins.local, twins.remote):
        log_dir(where, MAC).mkdir(parents=True)
        (log_dir(where, MAC) / bundle).write_bytes(b"BZh9 logs")
    assert bundle in same("host", "logs", MAC).out
    same("host", "logs", MAC, "--json")
    fetched = same("host", "logs", MAC, "--fetch", "latest", "-o", "-")
    assert (fetched.out, fetched.err) == ("BZh9 logs", f"wrote 9 bytes to stdout: log bundle "
                                          f"{bundle} of host {MAC}\n")  # fmt: skip
    assert "has no log bundle 'x.tar.bz2'" in same("host", "logs", MAC, "--fetch", "x.tar.bz2").err
    changed = same("host", "set", MAC, "--name", "web2", "--var", "keymap=de", "--unset", "disk")
    assert "variables keymap, root_password" in changed.out
    assert "has no such variable" in same("host", "set", MAC, "--unset", "disk").err
    assert "no host" in same("host", "set", "52:54:00:99:99:99", "--name", "x").err
    assert "nothing to change" in same("host", "set", MAC).err
    assert same("host", "show", MAC).out.count("keymap=de") == 1
    same("host", "rearm", MAC)
    assert "no agent to upgrade it" in same("host", "upgrade", MAC, "--version", "1.0").err
    assert same("host", "restore", MAC).code == 2
    # profiles
    same("profile", "list")
    same("profile", "show", "default")
    assert same("profile", "add", "p2", "--template", str(template)).out == (
        "added profile p2 (chain seed)\n"
    )
    assert "exists already" in same("profile", "add", "p2", "--template", str(template)).err
    same("profile", "add", "p2", "--template", str(template), "--update", "--xen-args", "x=1")
    same("profile", "edit", "p2", "--chain", "ipxe", "--payload-version", "")
    assert '"boot_chain": "ipxe"' in same("profile", "show", "p2", "--json").out
    assert "no profile 'nope'" in same("profile", "show", "nope").err
    assert "no profile 'nope'" in same("profile", "edit", "nope", "--chain", "seed").err
    same("host", "set", MAC, "--profile", "p2")
    assert "p2       ipxe   (server)  1" in same("profile", "list").out
    # repositories, answer files, pools
    assert "1.0" in same("server", "repo", "list").out
    same("server", "repo", "list", "--json")
    checked = same("answerfile", "validate", "--host", MAC)
    assert checked.out.startswith(f"host {MAC}: valid: fresh install onto vda; source url ")
    same("answerfile", "validate", "--host", MAC, "--json")
    same("host", "set", MAC, "--var", "disk=")  # an empty disk: the file is invalid
    assert same("answerfile", "validate", "--host", MAC).code == 2
    assert (
        "has never reported running"
        in same("pool", "upgrade", "--version", "1.0", "--master", MAC).err
    )
    # named pools and jobs (no host has an agent: the upgrade is refused before a job)
    assert same("pool", "create", "rack1", "--master", MAC).out == (
        f"created pool rack1: 1 host(s), master {MAC}\n"
    )
    assert "is in pool rack1 already" in same("pool", "create", "rack2", "--master", MAC).err
    assert "pool name" in same("pool", "create", "a b", "--master", MAC).err
    same("pool", "list")
    same("pool", "list", "--json")
    same("pool", "show", "rack1")
    assert "no pool 'nope'" in same("pool", "show", "nope").err
    assert "no agent to upgrade it" in same("pool", "upgrade", "rack1", "1.0").err
    assert "no pool 'nope'" in same("pool", "upgrade", "nope", "1.0").err
    assert "field 'timeout'" in same("pool", "upgrade", "rack1", "1.0", "--timeout", "1e9").err
    assert "is the master of pool rack1" in same("host", "remove", MAC).err
    assert same("job", "list").out == "no jobs\n"
    assert "no job 7" in same("job", "show", "7").err
    assert "no job 7" in same("job", "cancel", "7").err
    assert "a job is named by its number" in same("job", "follow", "x").err
    assert same("pool", "delete", "rack1").out == "deleted pool rack1\n"
    assert "profile 'p2' is used by 1 host(s)" in same("profile", "remove", "p2").err
    assert same("host", "remove", MAC).out == f"removed {MAC}\n"
    assert "no host" in same("host", "remove", MAC).err
    assert same("profile", "remove", "p2").out == "removed profile p2\n"
    assert "no profile 'p2'" in same("profile", "remove", "p2").err


def test_checking_an_answer_file_over_the_api_signals_nothing(twins: Twins) -> None:
    assert twins.over_api("host", "add", MAC).code == 0
    assert twins.over_api("answerfile", "validate", "--host", MAC).code == 0
    shown = twins.over_api("host", "show", MAC, "--json").out
    assert '"state": "pending"' in shown
    assert '"token_expires": null' in shown  # no boot config handed out, no ticket issued


def test_commands_of_the_server_s_own_directory_refuse_server(twins: Twins) -> None:
    done = twins.over_api("server", "repo", "add", str(twins.local))
    assert done.code == 2
    assert "works on the server's own directory only" in done.err
    assert twins.over_api("server", "token", "rotate").code == 2
    done = twins.over_api("host", "list", "--dir", str(twins.local))
    assert "give one of them" in done.err


def one_line(result: Result, code: int, *words: str) -> str:
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_client_failures_are_one_sentence(twins: Twins, tmp_path: Path) -> None:
    token = str(twins.remote / "api-token")
    ca = str(twins.pki.ca)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    argv = ["--token-file", token, "--ca-file", ca, "host", "list"]
    one_line(invoke(["--server", f"https://127.0.0.1:{closed}", *argv]), 1,
             "connection refused")  # fmt: skip
    # no --ca-file: the system's CAs do not know the throwaway CA
    one_line(invoke(["--server", twins.url, "--token-file", token, "host", "list"]), 1,
             "failed TLS verification", "--ca-file")  # fmt: skip
    other = make_pki(tmp_path / "other", name="other")
    one_line(invoke(["--server", twins.url, "--token-file", token, "--ca-file",
                     str(other.ca), "host", "list"]), 1, "failed TLS verification")  # fmt: skip
    # a wrong token (from the environment), and the plain port with TLS on
    wrong = invoke(["--server", twins.url, "--ca-file", ca, "host", "list"],
                   env={"NETINSTALL_TOKEN": "not-the-token"})  # fmt: skip
    assert "server token rotate" in one_line(wrong, 2, "wrong API token")
    plain = f"http://127.0.0.1:{twins.server.http_port}"
    said = one_line(invoke(["--server", plain, *argv]), 2, "over HTTPS only")
    assert f"use {twins.url}/api/v1/hosts" in said
    one_line(invoke(["--server", f"https://127.0.0.1:{twins.server.http_port}", *argv]), 1,
             "TLS with", "failed")  # fmt: skip
    one_line(invoke(["--server", "http://192.0.2.1:8080", *argv]), 2, "in clear")
    one_line(invoke(["--server", twins.url, "host", "list"], env={"NETINSTALL_TOKEN": None}), 2,
             "needs the API token")  # fmt: skip


# -- the client's bounds, against a server that misbehaves ---------------------------------


class _Misbehaving(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        kind = self.path.rsplit("/", 1)[-1]
        body = {
            "conflict": b'{"error": "host 52:54:00:00:00:01 is busy"}',
            "broken": b'{"error": "the disk is on fire"}',
            "html": b"<html>hello</html>",
            "wrong": b'{"hosts": 7}',
            "empty": b'{"nothing": true}',
            "big": b'{"hosts": []}' + b" " * 5000,
            "slow": b'{"hosts": []}',
        }[kind]
        status = {"conflict": 409, "broken": 500, "empty": 404}.get(kind, 200)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if kind != "big":  # no length: the client counts what comes
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "slow":  # a little, then nothing for longer than the client waits
            self.wfile.write(body[:3])
            self.wfile.flush()
            time.sleep(2)
            body = body[3:]
        self.wfile.write(body)


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url: str, kind: str, **bounds: float) -> str:
    from common.errors import InputError
    from common.protocol.messages import HostList

    client = ApiClient(endpoint(url), "token", None, **bounds)  # type: ignore[arg-type]
    with pytest.raises((RemoteError, InputError)) as caught:
        client.call("GET", f"hosts/{kind}", HostList)
    return str(caught.value)


def test_the_client_reads_refusals_and_bounds_its_replies(misbehaving: str) -> None:
    assert call(misbehaving, "conflict") == "host 52:54:00:00:00:01 is busy"
    assert call(misbehaving, "broken") == f"the server at {misbehaving} failed: the disk is on fire"
    assert "without a netinstall error" in call(misbehaving, "empty")
    assert "with something that is not JSON" in call(misbehaving, "html")
    assert "a reply that is no HostList" in call(misbehaving, "wrong")
    assert call(misbehaving, "big", max_reply=1000) == (
        f"{misbehaving} sent a reply over 1000 bytes; it was not read"
    )
    began = time.monotonic()
    assert "did not answer within" in call(misbehaving, "slow", reply_timeout=0.5)
    assert time.monotonic() - began < 1.5


def test_bad_tls_files_stop_server_run_before_anything_listens(twins: Twins) -> None:
    from tests.integration.conftest import netinstall

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    junk = twins.local / "junk.pem"
    junk.write_text("junk\n")
    done = netinstall("server", "run", str(twins.local), "--bind", "127.0.0.1", "--http-port",
                      str(port), "--tftp-port", "0", "--tls-cert", str(junk),
                      "--tls-key", str(twins.pki.key), timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"netinstall: --tls-cert {junk}: no PEM certificate in it"
    ]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # nothing listened there
    done = netinstall("server", "run", str(twins.local), "--tls-cert", str(twins.pki.cert))
    assert done.returncode == 2
    assert "--tls-cert and --tls-key go together" in done.stderr


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_the_tls_listener_speaks_tls_1_2_at_least(twins: Twins) -> None:
    old = ssl.create_default_context(cafile=str(twins.pki.ca))
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    port = twins.server.tls_port or 0
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        pytest.raises(ssl.SSLError),
    ):
        old.wrap_socket(raw, server_hostname="127.0.0.1")
    good = ssl.create_default_context(cafile=str(twins.pki.ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        good.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_token_rotate_replaces_the_api_token(twins: Twins) -> None:
    from pxe_server.registry import Registry

    file = twins.local / "api-token"
    old = file.read_text().strip()
    done = twins.here("server", "token", "rotate")
    assert done.code == 0, done.err
    new = file.read_text().strip()
    assert new != old
    assert new not in done.out
    assert old not in done.out
    assert f"new API token in {file} (mode 0600)" in done.out
    assert "a running server takes the new one within a second, no restart" in done.out
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    with Registry.open(twins.local) as registry:
        assert registry.api_token_matches(new)
        assert not registry.api_token_matches(old)
    # the running server's directory: the new token works at once, the old one is refused
    before = (twins.remote / "api-token").read_text().strip()
    assert invoke(["server", "token", "rotate", str(twins.remote)]).code == 0
    assert twins.over_api("host", "list").code == 0  # reads the new api-token file
    argv = ["--server", twins.url, "--ca-file", str(twins.pki.ca), "host", "list"]
    stale = invoke(argv, env={"NETINSTALL_SERVER": None, "NETINSTALL_TOKEN": before})
    one_line(stale, 2, "wrong API token", "within a second")


def test_the_client_gives_up_on_a_server_that_never_shakes_hands() -> None:
    from common.protocol.messages import HostList

    with socket.socket() as sock:  # the kernel completes the TCP handshake; nobody accepts
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        url = f"https://127.0.0.1:{sock.getsockname()[1]}"
        client = ApiClient(endpoint(url), "token", ssl_context(), connect_timeout=0.5)
        began = time.monotonic()
        with pytest.raises(RemoteError, match=r"did not answer within 0\.5 s to connect"):
            client.call("GET", "hosts", HostList)
        assert time.monotonic() - began < 2


def ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def test_a_pool_upgrade_over_the_api_is_run_by_the_server(twins: Twins, tmp_path: Path) -> None:
    """The server's job runner runs it; the CLI follows it over HTTPS; the hosts are played
    by a fake agent (a host given the upgrade reports running the new version)."""
    from pxe_server.model import State, Work
    from pxe_server.registry import Registry

    files = {name: name.encode() for name in PAYLOAD}
    write_repository(tmp_path / "repo-2", files, "2.0", "b2")
    macs = [MAC, "52:54:00:00:00:02"]
    with Registry.open(twins.remote) as registry:
        registry.add_repository("2.0", str(tmp_path / "repo-2"))
        for mac in macs:
            registry.add_host(mac)
            registry.record_event(mac, State.INSTALLED)
            registry.record_event(mac, State.RUNNING, facts={"payload_version": "1.0"})
        registry.create_pool("rack1", macs[1], [macs[0]])
        stop = threading.Event()

        def agents() -> None:
            while not stop.wait(0.05):
                for host in registry.list_hosts():
                    if host.work is Work.UPGRADE and host.state is State.PENDING:
                        registry.record_event(host.mac, State.INSTALLED)
                        facts = {"payload_version": "2.0"}
                        registry.record_event(host.mac, State.RUNNING, facts=facts)

        player = threading.Thread(target=agents)
        player.start()
        try:
            done = twins.over_api("pool", "upgrade", "rack1", "2.0", "--poll", "0.1")
        finally:
            stop.set()
            player.join(timeout=30)
    assert done.code == 0, done
    lines = done.out.splitlines()
    assert lines[0].startswith("job 1: upgrade of pool rack1 to 2.0 queued")
    assert lines[-1].endswith("] pool upgraded: 2 host(s) run 2.0")
    assert any(line.endswith(f"] started by {twins.server.jobs.holder}") for line in lines)  # type: ignore[union-attr]
    shown = twins.over_api("job", "show", "1", "--json").out
    assert '"state": "done"' in shown
    assert "(API, from 127.0.0.1)" in shown
    assert twins.over_api("job", "cancel", "1").err.strip() == "netinstall: job 1 is done already"


def test_bad_pool_and_job_requests_get_a_4xx_and_one_sentence(twins: Twins) -> None:
    from common.protocol.messages import (
        JobCancel,
        JobRecord,
        PoolMember,
        PoolRecord,
        PoolSpec,
        PoolUpgradeRequest,
        Removed,
    )
    from netinstall.api_client import Refused, read_token, tls_context

    token = read_token(twins.remote / "api-token", None)
    client = ApiClient(endpoint(twins.url), token, tls_context(twins.pki.ca))
    assert twins.over_api("host", "add", MAC).code == 0

    def refused(status: int, method: str, path: str, body: object = None) -> str:
        with pytest.raises(Refused) as caught:
            client.call(method, path, JobRecord, body)
        assert caught.value.status == status, caught.value
        (sentence,) = caught.value.problems
        assert "\n" not in sentence
        return sentence

    upgrade = PoolUpgradeRequest("1.0", pool="rack1", master=MAC)
    assert "a named pool or a master" in refused(400, "POST", "jobs/pool-upgrade", upgrade)
    assert "no pool 'nope'" in refused(404, "POST", "jobs/pool-upgrade",
                                       PoolUpgradeRequest("1.0", pool="nope"))  # fmt: skip
    assert "field 'poll'" in refused(400, "POST", "jobs/pool-upgrade",
                                     PoolUpgradeRequest("1.0", master=MAC, poll=0))  # fmt: skip
    assert "no agent to upgrade it" in refused(400, "POST", "jobs/pool-upgrade",
                                               PoolUpgradeRequest("1.0", master=MAC))  # fmt: skip
    assert "a job is named by its number" in refused(400, "GET", "jobs/abc")
    assert "no job 99" in refused(404, "GET", "jobs/99")
    assert "log_after" in refused(400, "GET", "jobs/99?log_after=x")
    assert "no job 99" in refused(404, "POST", "jobs/99/cancel", JobCancel("bob"))
    assert "pool name" in refused(400, "POST", "pools", PoolSpec("a b", MAC))
    assert client.call("POST", "pools", PoolRecord, PoolSpec("rack1", MAC)).master == MAC
    assert "exists already" in refused(409, "POST", "pools", PoolSpec("rack1", MAC))
    assert "no host" in refused(400, "POST", "pools/rack1/members", PoolMember("52:54:00:00:00:09"))
    assert "is the master" in refused(409, "DELETE", f"pools/rack1/members/{MAC}")
    assert "no pool 'x'" in refused(404, "DELETE", "pools/x")
    assert "cannot be removed" in refused(409, "DELETE", "profiles/default")
    assert "no profile 'nope'" in refused(404, "DELETE", "profiles/nope")
    assert client.call("DELETE", "pools/rack1", Removed).removed == "rack1"
