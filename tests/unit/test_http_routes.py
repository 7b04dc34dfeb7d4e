"""The HTTP server's pure parts: path confinement, log redaction, the API's host view;
and ``/files/`` through aiohttp's in-process test client (no process, loopback only)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from multidict import CIMultiDictProxy
from yarl import URL

from common.errors import InputError
from common.protocol.codec import encode
from netinstall.cli import main
from pxe_server.http import loggable, make_app
from pxe_server.http_api import log_dir
from pxe_server.http_files import Context, safe_path
from pxe_server.model import Host, ServerSettings, host_record
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


def answer(ctx: Context) -> tuple[int, str]:
    """The answer file as the host's installer gets it: after enrolling its key."""
    host = ctx.registry.get_host(MAC)
    assert host is not None
    assert host.token is not None
    key = "answer-file-test-key-0123456789abcdefgh"
    ctx.registry.enrol(MAC, host.token, key, "192.0.2.50")
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
    assert status == 500
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
