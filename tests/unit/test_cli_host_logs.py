"""``netinstall host logs MAC [--fetch NAME|latest [-o FILE] [--force]]``: a host's uploaded
log bundles listed and fetched, on a server directory and over the API with the same
output (tests/operator_api.py); a fetch leaves a whole file or nothing, and a reply over
MAX_LOG_BUNDLE or cut short is one sentence (a stand-in server that misbehaves)."""

from __future__ import annotations

import http.server
import json
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netinstall import fleet
from pxe_server import shared_dir
from pxe_server.limits import MAX_LOG_BUNDLE
from pxe_server.log_bundles import log_dir
from pxe_server.registry import Registry, default_profile
from tests.operator_api import Operator, operator, operator_of

__all__ = ["operator"]

MAC = "52:54:00:12:34:56"
OLD, NEW = "20260101T120000.000001Z.tar.bz2", "20260102T080000.000002Z.tar.bz2"
CONTENT = {OLD: b"BZh9 the first install's logs", NEW: b"BZh9 " + bytes(range(256)) * 300}


def store_bundles(shared: Path) -> Path:
    """Two bundles of MAC as the server stores them, and the files around them it skips."""
    directory = log_dir(shared, MAC)
    directory.mkdir(parents=True)
    for name, data in CONTENT.items():
        (directory / name).write_bytes(data)
    (directory / ".20260103T000000.000000Z.ab12cd34.part").write_bytes(b"an upload")
    (directory / "notes.txt").write_text("not a bundle")
    return directory


@pytest.fixture
def with_host(operator: Operator) -> Operator:
    assert operator.run("host", "add", MAC).code == 0
    return operator


def leftovers(where: Path) -> list[str]:
    return sorted(p.name for p in where.iterdir() if p.name.endswith(".part"))


def test_the_list_is_the_same_here_and_over_the_api(with_host: Operator) -> None:
    run = with_host.run
    assert run("host", "logs", MAC).out == (
        f"host {MAC} has no log bundles (an installer uploads one when its install fails)\n"
    )
    assert run("host", "logs", MAC, "--json").out == "[]\n"
    store_bundles(with_host.directory)
    listed = run("host", "logs", MAC.replace(":", "-"))
    lines = listed.out.splitlines()
    assert (listed.code, len(lines)) == (0, 3)
    assert lines[0].split() == ["NAME", "BYTES", "STORED"]
    assert lines[1].split()[:2] == [OLD, str(len(CONTENT[OLD]))]
    assert lines[2].split()[:2] == [NEW, str(len(CONTENT[NEW]))]
    shown = json.loads(run("host", "logs", MAC, "--json").out)
    assert [(b["name"], b["bytes"]) for b in shown] == [(n, len(d)) for n, d in CONTENT.items()]
    assert all(isinstance(b["time"], float) for b in shown)


@pytest.mark.parametrize("way", ["local", "remote"])
def test_a_shared_directory_is_where_they_are_read(tmp_path: Path, way: str) -> None:
    directory = tmp_path / "srv"
    with Registry.open(directory) as registry:
        registry.add_profile(default_profile())
        registry.add_host(MAC)
    shared = shared_dir.record(directory, str(tmp_path / "shared"))
    store_bundles(shared)
    with operator_of(directory, way) as operator:
        assert NEW in operator.run("host", "logs", MAC).out
        assert operator.run("host", "logs", MAC, "--fetch", NEW, "-o", "-").data == CONTENT[NEW]
    assert not (directory / "logs").exists()


def test_fetch_writes_a_whole_private_file_and_reports_its_size(
    with_host: Operator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_bundles(with_host.directory)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    fetched = with_host.run("host", "logs", MAC, "--fetch", OLD)
    assert (fetched.code, fetched.out) == (0, "")
    assert (
        fetched.err == f"wrote {len(CONTENT[OLD])} bytes to {OLD}: log bundle {OLD} of host {MAC}\n"
    )
    assert (here / OLD).read_bytes() == CONTENT[OLD]
    assert stat.S_IMODE((here / OLD).stat().st_mode) == 0o600
    latest = with_host.run("host", "logs", MAC, "--fetch", "latest", "-o", str(tmp_path / "x.tbz"))
    assert latest.err == (
        f"wrote {len(CONTENT[NEW])} bytes to {tmp_path / 'x.tbz'}: log bundle {NEW} of host {MAC}\n"
    )
    assert (tmp_path / "x.tbz").read_bytes() == CONTENT[NEW]
    into = with_host.run("host", "logs", MAC, "--fetch", NEW, "-o", str(here))  # a directory
    assert (into.code, (here / NEW).read_bytes()) == (0, CONTENT[NEW])
    piped = with_host.run("host", "logs", MAC, "--fetch", "latest", "-o", "-")
    assert (piped.code, piped.data) == (0, CONTENT[NEW])
    assert (
        piped.err == f"wrote {len(CONTENT[NEW])} bytes to stdout: log bundle {NEW} of host {MAC}\n"
    )
    assert leftovers(here) == leftovers(tmp_path) == []


def test_an_existing_file_is_replaced_only_with_force(
    with_host: Operator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_bundles(with_host.directory)
    monkeypatch.chdir(tmp_path)
    (tmp_path / OLD).write_bytes(b"mine")
    kept = with_host.run("host", "logs", MAC, "--fetch", OLD)
    assert (kept.code, kept.err) == (
        2,
        f"netinstall: {OLD} exists; give --force to replace it, or -o another FILE\n",
    )
    assert (tmp_path / OLD).read_bytes() == b"mine"
    assert with_host.run("host", "logs", MAC, "--fetch", OLD, "--force").code == 0
    assert (tmp_path / OLD).read_bytes() == CONTENT[OLD]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (("01:00:5e:00:00:01",), "'01:00:5e:00:00:01' is a multicast address"),
        (("52:54:00:99:99:99",), "no host 52:54:00:99:99:99 in the registry"),
        (("52:54:00:99:99:99", "--fetch", OLD), "no host 52:54:00:99:99:99 in the registry"),
        ((MAC, "--fetch", "20200101T000000.000000Z.tar.bz2"),
         f"host {MAC} has no log bundle '20200101T000000.000000Z.tar.bz2'"),
        ((MAC, "--fetch", "../../api-token"), f"host {MAC} has no log bundle '../../api-token'"),
        ((MAC, "--fetch", "notes.txt"), f"host {MAC} has no log bundle 'notes.txt'"),
        ((MAC, "-o", "x"), "-o and --force go with --fetch NAME|latest"),
        ((MAC, "--json", "--fetch", "latest"), "--json goes with the list, not with --fetch"),
    ],
)  # fmt: skip
def test_bad_input_is_one_sentence_and_writes_nothing(
    with_host: Operator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    sentence: str,
) -> None:
    store_bundles(with_host.directory)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    refused = with_host.run("host", "logs", *args)
    assert (refused.code, refused.out) == (2, "")
    assert refused.err.startswith(f"netinstall: {sentence}")
    assert refused.err.count("\n") == 1
    assert list(here.iterdir()) == []


def test_latest_of_none_and_a_missing_directory_are_one_sentence(
    with_host: Operator, tmp_path: Path
) -> None:
    none = with_host.run("host", "logs", MAC, "--fetch", "latest")
    assert none.err == (
        f"netinstall: host {MAC} has no log bundles to fetch (an installer uploads one when "
        "its install fails)\n"
    )
    store_bundles(with_host.directory)
    nowhere = with_host.run("host", "logs", MAC, "--fetch", OLD, "-o", str(tmp_path / "no/x"))
    assert (nowhere.code, nowhere.err) == (
        2,
        f"netinstall: cannot write {tmp_path / 'no/x'}: No such file or directory\n",
    )


# -- a server that misbehaves: the client's bounds -----------------------------------------

Reply = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[Callable[[Reply], Operator]]:
    """An operator of a stand-in server whose GET answers as the test says."""
    directory = tmp_path / "srv"
    with Registry.open(directory) as registry:  # for its API token
        registry.add_profile(default_profile())
    answer: list[Reply] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer[0](self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serving(reply: Reply) -> Operator:
        answer[:] = [reply]
        return Operator(directory, f"http://127.0.0.1:{server.server_address[1]}")

    try:
        yield serving
    finally:
        server.shutdown()
        server.server_close()


def body(data: bytes, length: int | None, *, close: bool = False, chunked: bool = False) -> Reply:
    """A 200 with ``data`` and the Content-Length ``length`` (None: none), the connection
    closed after it (``close``), or ``data`` as the start of a chunk of 4096 bytes."""

    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/x-bzip2")
        if length is not None:
            handler.send_header("Content-Length", str(length))
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.wfile.write(b"1000\r\n" + data if chunked else data)
        handler.close_connection = close

    return reply


@pytest.mark.parametrize(
    ("reply", "limit", "sentence"),
    [
        (body(b"", MAX_LOG_BUNDLE + 1), MAX_LOG_BUNDLE,
         f"sent a reply over {MAX_LOG_BUNDLE} bytes; it was not read"),
        (body(b"x" * 5000, None, close=True), 4096,
         "sent a reply over 4096 bytes; it was not read"),
        (body(b"BZh9 cut", 1000, close=True), MAX_LOG_BUNDLE,
         "ended its reply after 8 of 1000 bytes"),
        (body(b"BZh9 cut", None, close=True, chunked=True), MAX_LOG_BUNDLE,
         "ended its reply before its last chunk"),
    ],
)  # fmt: skip
def test_a_reply_too_big_or_cut_short_leaves_no_file(
    stand_in: Callable[[Reply], Operator],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    reply: Reply,
    limit: int,
    sentence: str,
) -> None:
    monkeypatch.setattr(fleet, "MAX_LOG_BUNDLE", limit)
    monkeypatch.chdir(tmp_path)
    operator = stand_in(reply)
    for output in (OLD, "-"):
        failed = operator.run("host", "logs", MAC, "--fetch", OLD, "-o", output)
        assert (failed.code, failed.out) == (1, "")
        assert failed.err == f"netinstall: {operator.url} {sentence}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["srv"]
