"""The HTTP server's pure parts: path confinement, log redaction, the API's host view;
and ``/files/`` through aiohttp's in-process test client (no process, loopback only)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from click.testing import CliRunner
from multidict import CIMultiDictProxy
from yarl import URL

from common.errors import InputError
from common.protocol.codec import encode
from netinstall.cli import main
from pxe_server.http import json_errors, loggable, make_app
from pxe_server.http_files import Context, safe_path
from pxe_server.log_bundles import log_dir
from pxe_server.model import Host, ServerSettings, State, host_record
from pxe_server.registry import Registry, default_profile
from pxe_server.server import advertised_address

ANY = "0.0.0.0"  # noqa: S104 - the wildcard address, never bound here


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "boot").mkdir(parents=True)
    (tmp_path / "root" / "boot" / "xen.gz").write_bytes(b"x")
    (tmp_path / "secret").write_text("no")
    (tmp_path / "root" / "out").symlink_to(tmp_path / "secret")
    (tmp_path / "root" / "in").symlink_to("boot/xen.gz")
    return tmp_path / "root"


def test_safe_path_keeps_names_inside_the_root(root: Path) -> None:
    real = root.resolve()
    assert safe_path(root, "boot/xen.gz") == real / "boot" / "xen.gz"
    assert safe_path(root, "./boot//xen.gz") == real / "boot" / "xen.gz"
    assert safe_path(root, "in") == real / "boot" / "xen.gz"
    assert safe_path(root, "missing") == real / "missing"


@pytest.mark.parametrize(
    "name",
    ["../secret", "boot/../../secret", "/etc/passwd", "boot/xen.gz\0", "..\\secret", "out", ".."],
)
def test_safe_path_refuses_escapes(root: Path, name: str) -> None:
    assert safe_path(root, name) is None


def test_missing_root_refuses_everything(tmp_path: Path) -> None:
    assert safe_path(tmp_path / "nothing", "a") is None


def test_request_log_redacts_tokens() -> None:
    assert loggable("/answerfile/aa?token=s3cr3t") == "/answerfile/aa?token=REDACTED"
    assert loggable("/x?a=1&TOKEN=s3cr3t&b=2") == "/x?a=1&TOKEN=REDACTED&b=2"
    assert loggable("/x?netinstall.token=abc") == "/x?netinstall.token=REDACTED"
    assert loggable("/boot/pxelinux.0") == "/boot/pxelinux.0"


def test_the_host_record_has_no_secrets() -> None:
    host = Host(
        mac="52:54:00:12:34:56",
        variables=(("disk", "vda"), ("root_password", "$6$salt$not-a-real-hash")),
        token="t0k",
        agent_credential_hash="cr3d",
    )
    shown = encode(host_record(host))
    for secret in ("t0k", "cr3d", "$6$"):
        assert secret not in repr(shown)
    assert shown["variables"] == {"disk": "vda", "root_password": "<redacted>"}
    assert (shown["state"], shown["token"], shown["agent_credential"]) == ("pending", "set", "set")
    assert shown["protocol"] == 2


def test_log_dir_uses_dashes(tmp_path: Path) -> None:
    assert log_dir(tmp_path, "52:54:00:12:34:56") == tmp_path / "logs" / "52-54-00-12-34-56"


def test_advertised_address() -> None:
    assert advertised_address(ANY, None, "192.0.2.1") == "192.0.2.1"
    assert advertised_address("192.0.2.5", None, None) == "192.0.2.5"
    with pytest.raises(InputError, match="advertise"):
        advertised_address(ANY, None, None)
    assert advertised_address(ANY, "lo", None) == "127.0.0.1"


def test_interface_ra_prefix_reads_global_64s(tmp_path: Path) -> None:
    from pxe_server.server import interface_ra_prefix

    table = tmp_path / "if_inet6"
    table.write_text(
        "fe800000000000000000000000000001 03 40 20 80 br0\n"
        "fd770000000000000000000000000001 03 40 00 80 br0\n"
        "20010db8000000000000000000000001 04 40 00 80 eth0\n"
    )
    assert interface_ra_prefix("br0", table) == "fd77::"
    assert interface_ra_prefix("eth0", table) == "2001:db8::"
    assert interface_ra_prefix("lo", table) is None
    assert interface_ra_prefix("br0", tmp_path / "missing") is None


# -- /files/: the operator's files --------------------------------------------------


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    """A server directory whose ``files/`` holds a script, a nested file and two symlinks."""
    directory = tmp_path / "srv"
    (directory / "files" / "drivers").mkdir(parents=True)
    (directory / "files" / "post.sh").write_text("#!/bin/sh\necho post\n")
    (directory / "files" / "drivers" / "XS-REPOSITORY-LIST").write_text("packages.example\n")
    (directory / "files" / "token").symlink_to(directory / "api-token")
    (directory / "files" / "here").symlink_to("post.sh")
    (directory / "api-token").write_text("s3cr3t\n")
    return directory


@pytest.fixture
def files_context(server_dir: Path) -> Iterator[Context]:
    with Registry.open(server_dir) as registry:
        # A new registry writes its own API token; the file here holds a known text again.
        (server_dir / "api-token").write_text("s3cr3t\n")
        yield Context(
            registry=registry,
            registry_dir=server_dir,
            settings=ServerSettings(http_base="http://192.0.2.1:8080", tftp_address="192.0.2.1"),
            netboot=None,
            repo=None,
        )


def request(
    ctx: Context, target: str, method: str = "GET", **headers: str
) -> tuple[int, bytes, CIMultiDictProxy[str]]:
    """``method target`` sent as given (percent escapes and all) to an app serving ``ctx``."""

    async def send() -> tuple[int, bytes, CIMultiDictProxy[str]]:
        async with TestClient(TestServer(make_app(ctx))) as client:
            reply = await client.request(method, URL(target, encoded=True), headers=headers)
            return reply.status, await reply.read(), reply.headers

    return asyncio.run(send())


def test_files_are_served(files_context: Context, server_dir: Path) -> None:
    script = (server_dir / "files" / "post.sh").read_bytes()
    status, body, headers = request(files_context, "/files/post.sh")
    assert (status, body) == (200, script)
    assert int(headers["Content-Length"]) == len(script)
    status, body, _ = request(files_context, "/files/drivers/XS-REPOSITORY-LIST")
    assert (status, body) == (200, b"packages.example\n")
    assert request(files_context, "/files/here")[:2] == (200, script)  # a symlink inside files/


def test_files_head_gives_the_size_and_no_body(files_context: Context, server_dir: Path) -> None:
    size = (server_dir / "files" / "post.sh").stat().st_size
    status, body, headers = request(files_context, "/files/post.sh", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) == size


@pytest.mark.parametrize(
    "target",
    [
        "/files/%2e%2e/api-token",
        "/files/..%2fapi-token",
        "/files/drivers/%2e%2e/%2e%2e/api-token",
        "/files/%2f" + "%2f".join(["etc", "passwd"]),
        "/files/post.sh%00",
        "/files/token",  # a symlink out of files/
        "/files/drivers",  # a directory: no listings
        "/files/nothing",
    ],
)
def test_files_refuse_escapes_and_non_files(files_context: Context, target: str) -> None:
    status, body, _ = request(files_context, target)
    assert status == 404
    assert b"s3cr3t" not in body
    assert b"root:" not in body


def test_missing_files_directory_names_it(files_context: Context, server_dir: Path) -> None:
    files = server_dir / "files"
    shutil.rmtree(files)
    status, body, _ = request(files_context, "/files/post.sh")
    assert status == 404
    message = body.decode()
    assert f"the operator files directory {files} does not exist" in message
    assert "netinstall server init" in message


def test_server_init_makes_the_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no build/ here to take defaults from
    directory = tmp_path / "srv"
    result = CliRunner().invoke(main, ["server", "init", str(directory)])
    assert result.exit_code == 0, result.output
    files = directory / "files"
    assert files.is_dir()
    assert files.stat().st_mode & 0o777 == 0o755
    assert f"files: {files} (served at /files/)" in result.stdout.splitlines()
    with Registry.open(directory) as registry:
        ctx = Context(registry, directory, ServerSettings("http://h", "h"), None, None)
        assert ctx.files == files
    (files / "kept").write_text("x")
    again = CliRunner().invoke(main, ["server", "init", str(directory)])
    assert again.exit_code == 0, again.output
    assert (files / "kept").read_text() == "x"


# -- /repo/<version>/ and the answer file's repository --------------------------------


@pytest.fixture
def repos_context(tmp_path: Path) -> Iterator[Context]:
    """Two repositories: 0.1.0 (the default, also at /repo/) and 0.2.0; a host."""
    for version in ("0.1.0", "0.2.0"):
        (tmp_path / version / "boot").mkdir(parents=True)
        (tmp_path / version / "boot" / "xen.gz").write_text(f"xen {version}")
    (tmp_path / "secret").write_text("s3cr3t")
    with Registry.open(tmp_path / "srv") as registry:
        registry.add_profile(default_profile())
        registry.set_setting("payload_version", "0.1.0")
        registry.add_repository("0.1.0", str(tmp_path / "0.1.0"))
        registry.add_repository("0.2.0", str(tmp_path / "0.2.0"))
        registry.add_host(MAC)
        yield Context(
            registry=registry,
            registry_dir=tmp_path / "srv",
            settings=ServerSettings(http_base="http://192.0.2.1:8080", tftp_address="192.0.2.1"),
            netboot=None,
            repo=tmp_path / "0.1.0",
        )


MAC = "52:54:00:12:34:56"


def test_repositories_are_served_side_by_side(repos_context: Context) -> None:
    assert request(repos_context, "/repo/0.2.0/boot/xen.gz")[:2] == (200, b"xen 0.2.0")
    assert request(repos_context, "/repo/0.1.0/boot/xen.gz")[:2] == (200, b"xen 0.1.0")
    assert request(repos_context, "/repo/boot/xen.gz")[:2] == (200, b"xen 0.1.0")  # default
    assert request(repos_context, "/repo/0.3.0/boot/xen.gz")[0] == 404  # not registered


@pytest.mark.parametrize(
    "target",
    [
        "/repo/0.2.0/%2e%2e/secret",
        "/repo/0.2.0/..%2fsecret",
        "/repo/0.2.0/boot/%2e%2e/%2e%2e/secret",
        "/repo/0.2.0/%2fetc%2fpasswd",
        "/repo/0.2.0/boot",
    ],
)
def test_versioned_repositories_refuse_escapes(repos_context: Context, target: str) -> None:
    status, body, _ = request(repos_context, target)
    assert status == 404
    assert b"s3cr3t" not in body


def test_a_vanished_repository_says_how_to_fix_it(repos_context: Context, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "0.2.0")
    status, body, _ = request(repos_context, "/repo/0.2.0/boot/xen.gz")
    assert status == 404
    assert b"server repo add DIR --replace" in body


def enrolled(ctx: Context) -> str:
    """The key the host's installer enrolled (enrolled now if none was)."""
    host = ctx.registry.get_host(MAC)
    assert host is not None
    assert host.token is not None
    key = "answer-file-test-key-0123456789abcdefgh"
    ctx.registry.enrol(MAC, host.token, key, "192.0.2.50")
    return key


def answer(ctx: Context) -> tuple[int, str]:
    """The answer file as the host's installer gets it: after enrolling its key."""
    key = enrolled(ctx)
    status, body, _ = request(ctx, f"/answerfile/{MAC}", Authorization=f"Bearer {key}")
    return status, body.decode()


def test_answer_file_repo_url_follows_the_assigned_version(repos_context: Context) -> None:
    status, text = answer(repos_context)
    assert status == 200
    assert '<source type="url">http://192.0.2.1:8080/repo/0.1.0/</source>' in text
    registry = repos_context.registry
    for version in ("0.2.0", "0.9.0"):
        registry.add_profile(
            replace(default_profile(), name=f"v{version}", payload_version=version)
        )
    registry.update_host(MAC, profile="v0.2.0")  # the host's assigned version becomes 0.2.0
    assert "http://192.0.2.1:8080/repo/0.2.0/" in answer(repos_context)[1]
    registry.update_host(MAC, profile="v0.9.0")
    status, text = answer(repos_context)
    assert status == 409  # the operator's to fix, not a server error: no retries
    assert "payload version 0.9.0 is not registered" in text


def test_answer_file_of_an_upgrade_is_the_built_in_one(repos_context: Context) -> None:
    registry = repos_context.registry
    registry.record_event(MAC, "installed")
    registry.record_event(MAC, "running", facts={"payload_version": "0.1.0"})
    registry.assign_work(MAC, "upgrade", version="0.2.0")
    status, text = answer(repos_context)
    assert status == 200
    assert '<installation mode="upgrade">' in text
    assert '<source type="url">http://192.0.2.1:8080/repo/0.2.0/</source>' in text
    registry.assign_work(MAC, "restore")
    status, text = answer(repos_context)
    assert (status, "<backup-disk>sda</backup-disk>" in text) == (200, True)


# -- MACs that name no machine ------------------------------------------------------------

GROUP_MACS = {
    "ff:ff:ff:ff:ff:ff": "is the broadcast address",
    "FF-FF-FF-FF-FF-FF": "is the broadcast address",
    "00:00:00:00:00:00": "is the all-zero MAC",
    "000000000000": "is the all-zero MAC",
    "01:00:5e:00:00:fb": "is a multicast address",
    "33-33-00-00-00-01": "is a multicast address",
    "03:00:00:00:00:00": "is a multicast address",
}


@pytest.mark.parametrize(("mac", "words"), GROUP_MACS.items())
def test_group_and_zero_macs_are_refused_with_a_sentence(mac: str, words: str) -> None:
    from pxe_server.model import BadMac, mac_syntax, normalise_mac

    with pytest.raises(BadMac, match=words):
        normalise_mac(mac)
    mac_syntax(mac)  # the shape is right: a record made before can still be found
    assert normalise_mac("02:00:00:00:00:01") == "02:00:00:00:00:01"  # locally administered


@pytest.mark.parametrize(("mac", "words"), GROUP_MACS.items())
def test_group_macs_are_refused_in_every_url_and_by_the_api(
    repos_context: Context, mac: str, words: str
) -> None:
    from pxe_server.model import mac_syntax

    dashes = mac_syntax(mac).replace(":", "-")  # pxelinux and GRUB names have dashes
    token = repos_context.registry.get_host(MAC).token  # type: ignore[union-attr]
    for target in (
        f"/ipxe/{mac}",
        f"/config/pxelinux.cfg/01-{dashes}",
        f"/config/grub/grub.cfg-01-{dashes}",
        f"/config/xen-efi/{dashes}.cfg",
        f"/answerfile/{mac}?token={token}",
    ):
        status, body, _ = request(repos_context, target)
        assert status == 400, target
        assert words in body.decode(), target
    api = (repos_context.registry_dir / "api-token").read_text().strip()

    async def api_calls() -> list[tuple[int, str]]:
        bearer = {"Authorization": f"Bearer {api}"}
        async with TestClient(TestServer(make_app(repos_context))) as client:
            made = await client.post("/api/v1/hosts", json={"mac": mac}, headers=bearer)
            shown = await client.get(f"/api/v1/hosts/{mac}", headers=bearer)
            return [(made.status, await made.text()), (shown.status, await shown.text())]

    for status, text in asyncio.run(api_calls()):
        assert (status, words in text) == (400, True), text
    assert [h.mac for h in repos_context.registry.list_hosts()] == [MAC]


def test_the_cli_refuses_group_macs_and_removes_an_old_record_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pxe_server import registry as registry_module
    from pxe_server.model import mac_syntax

    directory = tmp_path / "srv"
    with Registry.open(directory) as registry:
        registry.add_profile(default_profile())
    added = CliRunner().invoke(main, ["host", "add", "01:00:5e:00:00:fb", "--dir", str(directory)])
    assert added.exit_code == 2
    assert "'01:00:5e:00:00:fb' is a multicast address" in added.output
    assert "Traceback" not in added.output
    # A registry written before group MACs were refused may hold one: it can still go.
    with monkeypatch.context() as patch, Registry.open(directory) as registry:
        patch.setattr(registry_module, "normalise_mac", mac_syntax)
        registry.add_host("ff:ff:ff:ff:ff:ff")
    removed = CliRunner().invoke(
        main, ["host", "remove", "ff:ff:ff:ff:ff:ff", "--dir", str(directory)]
    )
    assert removed.exit_code == 0, removed.output
    with Registry.open(directory) as registry:
        assert registry.list_hosts() == []


# -- log bundles: streamed to disk, private, a quota per host -----------------------------


def put_bundle(ctx: Context, chunks: list[bytes], **headers: str) -> tuple[int, dict[str, Any]]:
    """PUT ``chunks`` as one chunked body (no Content-Length) with the host's key."""
    token = enrolled(ctx)

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def send() -> tuple[int, dict[str, Any]]:
        async with TestClient(TestServer(make_app(ctx))) as client:
            reply = await client.put(
                f"/api/v1/hosts/{MAC}/logs",
                data=body(),
                headers={"Authorization": f"Bearer {token}", **headers},
            )
            return reply.status, await reply.json()

    return asyncio.run(send())


def test_a_bundle_is_stored_whole_and_private(repos_context: Context) -> None:
    chunks = [bytes([i]) * 700_000 for i in range(5)]  # several LOG_WRITE_CHUNKs
    status, reply = put_bundle(repos_context, chunks)
    assert status == 201, reply
    logs = repos_context.registry_dir / "logs"
    stored = repos_context.registry_dir / reply["stored"]
    assert stored.parent == log_dir(repos_context.registry_dir, MAC)
    assert stored.read_bytes() == b"".join(chunks)
    assert reply["bytes"] == 3_500_000
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]  # no .part left


def test_bundles_go_to_the_shared_directory_and_are_listed_and_fetched(
    repos_context: Context, tmp_path: Path
) -> None:
    ctx = replace(repos_context, shared_dir=tmp_path / "shared")
    (tmp_path / "shared").mkdir()
    status, reply = put_bundle(ctx, [b"BZh9 first"])
    assert status == 201, reply
    assert (tmp_path / "shared" / reply["stored"]).read_bytes() == b"BZh9 first"
    assert not (repos_context.registry_dir / "logs").exists()
    token = (repos_context.registry_dir / "api-token").read_text().strip()
    name = Path(reply["stored"]).name

    async def get(path: str) -> tuple[int, bytes]:
        async with TestClient(TestServer(make_app(ctx))) as client:
            got = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            return got.status, await got.read()

    status, body = asyncio.run(get(f"/api/v1/hosts/{MAC}/logs"))
    listed = json.loads(body)["bundles"]
    assert status == 200
    assert [(b["name"], b["bytes"]) for b in listed] == [(name, 10)]
    assert asyncio.run(get(f"/api/v1/hosts/{MAC}/logs/{name}")) == (200, b"BZh9 first")
    for bad in ("20260101T000000.000000Z.tar.bz2", "..%2F..%2Fapi-token", ".part"):
        assert asyncio.run(get(f"/api/v1/hosts/{MAC}/logs/{bad}"))[0] == 404
    assert asyncio.run(get("/api/v1/hosts/52:54:00:99:99:99/logs"))[0] == 404


@pytest.mark.parametrize(
    ("chunks", "headers", "status", "words"),
    [
        ([b"x" * (1 << 20)] * 65, {}, 413, "a log bundle may have at most 67108864 bytes"),
        ([b""], {}, 400, "the log bundle is empty"),
        ([b"BZh9" * 10], {"Content-Encoding": "gzip"}, 400, "no Content-Encoding, not 'gzip'"),
    ],
)
def test_a_refused_bundle_leaves_no_file(
    repos_context: Context,
    chunks: list[bytes],
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    got, reply = put_bundle(repos_context, chunks, **headers)
    assert (got, words in reply["error"]) == (status, True), reply
    directory = log_dir(repos_context.registry_dir, MAC)
    assert not directory.exists() or list(directory.iterdir()) == []


def test_the_quota_keeps_the_newest_bundles_of_a_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pxe_server import log_bundles

    monkeypatch.setattr(log_bundles, "LOG_BUNDLES_KEPT", 3)
    monkeypatch.setattr(log_bundles, "LOG_BYTES_KEPT", 250)
    sizes = {"20260101T000001": 10, "20260101T000002": 10, "20260101T000003": 100,
             "20260101T000004": 100, "20260101T000005": 100, "20260101T000006": 300}  # fmt: skip
    for stamp, size in sizes.items():
        (tmp_path / f"{stamp}.000000Z.tar.bz2").write_bytes(b"x" * size)
    (tmp_path / ".20260101T000007.000000Z.ab.part").write_bytes(b"in flight")
    old = tmp_path / ".20250101T000000.000000Z.cd.part"
    old.write_bytes(b"a crash's")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    removed = log_bundles.prune_bundles(tmp_path)
    # The newest stays even past the byte quota; then as many as fit, 3 at most.
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == [".20260101T000007.000000Z.ab.part", "20260101T000006.000000Z.tar.bz2"]
    assert len(removed) == 6
    (tmp_path / "20260101T000006.000000Z.tar.bz2").unlink()
    for stamp in list(sizes)[:5]:
        (tmp_path / f"{stamp}.000000Z.tar.bz2").write_bytes(b"x" * sizes[stamp])
    log_bundles.prune_bundles(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.tar.bz2")) == [
        "20260101T000004.000000Z.tar.bz2",
        "20260101T000005.000000Z.tar.bz2",
    ]  # 3 would be 300 bytes: past LOG_BYTES_KEPT


# -- unknown MACs (unknown_policy install): a rate and a count ------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_admits_a_burst_then_the_rate_and_logs_one_line_a_burst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pxe_server.admission import RegistrationRefused, UnknownGate, UnknownLimits
    from pxe_server.limits import UNKNOWN_QUIET

    clock = Clock()
    gate = UnknownGate(UnknownLimits(count=100, per_minute=6), clock)
    caplog.set_level(logging.INFO, logger="netinstall.server")
    for _ in range(6):
        gate.take(MAC)  # a burst of a minute's worth
    for _ in range(500):
        with pytest.raises(RegistrationRefused, match="at most 6 a minute") as refused:
            gate.take(MAC)
        assert (refused.value.status, refused.value.retry_after) == (429, 11)
    clock.now += 10.0  # one a 10 s
    gate.take(MAC)
    with pytest.raises(RegistrationRefused):
        gate.take(MAC)
    lines = [r.getMessage() for r in caplog.records if "refusing unknown MACs" in r.getMessage()]
    assert len(lines) == 1  # 501 refusals, one burst
    clock.now += UNKNOWN_QUIET + 1  # quiet: the next refusal starts a new burst
    for _ in range(7):
        with suppress(RegistrationRefused):
            gate.take(MAC)
    lines = [r.getMessage() for r in caplog.records if "refusing unknown MACs" in r.getMessage()]
    assert len(lines) == 2
    assert "(501 refused in the burst before)" in lines[1]


def test_unknown_registrations_stop_at_the_count_of_hosts_not_yet_running(
    tmp_path: Path,
) -> None:
    with Registry.open(tmp_path) as registry:
        registry.add_profile(default_profile())
        registry.add_host("52:54:00:00:00:01")  # the operator's: never counted
        made = [registry.add_unknown_host(f"52:54:00:00:01:{i:02x}", 3) for i in range(5)]
        assert [h is not None for h, _ in made] == [True, True, True, False, False]
        assert [n for _, n in made] == [1, 2, 3, 3, 3]
        again, _ = registry.add_unknown_host("52:54:00:00:01:00", 3)  # known now: returned
        assert again is not None
        registry.record_event("52:54:00:00:01:00", State.INSTALLED)
        assert registry.add_unknown_host("52:54:00:00:01:03", 3)[0] is None  # not running yet
        registry.record_event("52:54:00:00:01:00", State.RUNNING)
        host, waiting = registry.add_unknown_host("52:54:00:00:01:03", 3)
        assert (host is not None, waiting) == (True, 3)
        assert len(registry.list_hosts()) == 5


def test_over_the_limits_no_host_is_made_and_http_says_why(repos_context: Context) -> None:
    from pxe_server.admission import UnknownGate, UnknownLimits
    from pxe_server.model import UnknownPolicy

    ctx = replace(
        repos_context,
        settings=replace(repos_context.settings, unknown_policy=UnknownPolicy.INSTALL),
        unknown=UnknownGate(UnknownLimits(count=2, per_minute=1000)),
    )
    statuses = []
    for i in range(4):
        status, body, headers = request(ctx, f"/config/pxelinux.cfg/01-52-54-00-00-02-{i:02x}")
        statuses.append(status)
    assert statuses == [200, 200, 503, 503]
    assert b"--unknown-limit 2" in body
    assert headers["Retry-After"] == "60"
    assert len(repos_context.registry.list_hosts()) == 3  # MAC and the two admitted
    ctx = replace(ctx, unknown=UnknownGate(UnknownLimits(count=100, per_minute=1)))
    assert request(ctx, "/ipxe/52:54:00:00:03:01")[0] == 200
    status, body, headers = request(ctx, "/ipxe/52:54:00:00:03:02")
    assert (status, 0 < int(headers["Retry-After"]) <= 61) == (429, True)
    assert b"at most 1 a minute" in body
    assert len(repos_context.registry.list_hosts()) == 4


@pytest.mark.parametrize("gone", [True, False])
def test_a_request_whose_client_went_away_is_not_served(gone: bool) -> None:
    """A client that gave up closed its connection: its request is not handled (it will
    be sent again), and the refusal is a 503 that did no work."""
    transport = mock.Mock(is_closing=lambda: gone)
    request = make_mocked_request("POST", "/api/v1/hosts/x/events", transport=transport)
    handled: list[object] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        handled.append(request)
        return web.Response(status=204)

    reply = asyncio.run(json_errors(request, handler))
    assert (reply.status, len(handled)) == ((503, 0) if gone else (204, 1))
