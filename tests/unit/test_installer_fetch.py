"""installer_core.fetch: schemes, retries with backoff, redaction, the answer-file steps."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import requests

import answerfile.limits
from answerfile.bootargs import parse_cmdline
from answerfile.model import Source, SourceType
from common.errors import AnswerFileError, InputError, SourceError
from installer_core import fetch
from installer_core.fetch import (
    Transport,
    fetch_answerfile,
    fetch_text,
    repository_url,
    validate_answerfile,
)
from tests.unit.test_installer_fakes import (
    TOKEN,
    FakeResponse,
    FakeRunner,
    FakeSession,
    file_server,
    transport,
)

EXAMPLE = (Path(fetch.__file__).parents[1] / "answerfile/examples/fresh.xml").read_text()


def test_http_text_is_fetched() -> None:
    session = FakeSession(file_server({"a.xml": b"<x/>"}))
    assert fetch_text("http://srv/a.xml", transport=transport(session)) == "<x/>"
    method, url, kwargs = session.calls[0]
    assert (method, url, kwargs["timeout"]) == ("GET", "http://srv/a.xml", 30.0)


def test_transient_failures_are_retried_with_exponential_backoff() -> None:
    answers: list[FakeResponse | Exception] = [
        requests.ConnectionError("refused"),
        FakeResponse(503, b"busy"),
        FakeResponse(200, b"at last"),
    ]
    slept: list[float] = []
    io = transport(FakeSession(lambda *_: answers.pop(0)))
    io.sleep = slept.append
    assert fetch_text("http://srv/x", backoff=2.0, transport=io) == "at last"
    assert slept == [2.0, 4.0]


def test_the_error_names_the_url_and_last_error_with_the_token_redacted() -> None:
    url = f"http://srv/answerfile/52:54:00:12:34:56?token={TOKEN}"
    io = transport(FakeSession(lambda *_: requests.ConnectionError(f"refused for url: {url}")))
    slept: list[float] = []
    io.sleep = slept.append
    with pytest.raises(SourceError) as caught:
        fetch_text(url, retries=3, backoff=1.0, transport=io)
    message = str(caught.value)
    assert TOKEN not in message
    assert message.startswith(
        "cannot read http://srv/answerfile/52:54:00:12:34:56?token=<redacted>"
    )
    assert "(3 attempts): refused for url:" in message
    assert slept == [1.0, 2.0]


def test_a_404_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession(file_server({}))
    with pytest.raises(SourceError, match=r"\(1 attempt\): HTTP 404 Not Found"):
        fetch_text(f"https://srv/missing?token={TOKEN}", transport=transport(session))
    assert len(session.calls) == 1
    assert TOKEN not in caplog.text


def test_file_urls_are_read_and_a_missing_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "a b.xml").write_text("hello")
    io = transport()
    assert fetch_text(f"file://{tmp_path}/a%20b.xml", transport=io) == "hello"
    with pytest.raises(SourceError, match=r"cannot read file:///.*/nope \(1 attempt\)"):
        fetch_text(f"file://{tmp_path}/nope", transport=io)


def test_ftp_goes_through_urllib_with_credentials() -> None:
    import io as io_module

    opened: list[str] = []

    def urlopen(url: str, timeout: float) -> io_module.BytesIO:
        opened.append(url)
        return io_module.BytesIO(b"ftp data")

    io = transport()
    io.urlopen = urlopen
    assert fetch_text("ftp://me:pw@srv/dir/f", transport=io) == "ftp data"
    assert opened == ["ftp://me:pw@srv/dir/f"]


@pytest.mark.parametrize(
    ("url", "export"),
    [("nfs://srv:/export/dir/a.xml", "srv:/export/dir"), ("nfs://srv/export/a.xml", "srv:/export")],
)
def test_nfs_mounts_read_only_reads_and_unmounts(tmp_path: Path, url: str, export: str) -> None:
    def mount(argv: Sequence[str]) -> str:
        (Path(argv[-1]) / url.rpartition("/")[2]).write_text("over nfs")
        return ""

    def umount(argv: Sequence[str]) -> str:
        for child in Path(argv[-1]).iterdir():
            child.unlink()
        return ""

    runner = FakeRunner({"mount": mount, "umount": umount})
    io = transport(runner=runner)
    io.mount_base = tmp_path
    assert fetch_text(url, transport=io) == "over nfs"
    point = str(tmp_path / "netinstall-nfs-0")
    assert runner.calls == [
        ["mount", "-t", "nfs", "-o", "ro,nolock", export, point],
        ["umount", point],
    ]
    assert list(tmp_path.iterdir()) == []


def test_fetch_answerfile_reads_the_url(tmp_path: Path) -> None:
    session = FakeSession(file_server({"answerfile/m": EXAMPLE.encode()}))
    args = parse_cmdline(f"install answerfile=http://srv/answerfile/m?token={TOKEN}")
    assert fetch_answerfile(args, tmp_path, transport(session)) == EXAMPLE


def test_the_generator_must_start_with_a_shebang_and_its_stdout_is_the_answer(
    tmp_path: Path,
) -> None:
    args = parse_cmdline("install answerfile_generator=http://srv/gen")
    runner = FakeRunner({"answerfile-generator": "<installation/>\n"})
    io: Transport = transport(FakeSession(file_server({"gen": b"#!/bin/sh\necho hi\n"})), runner)
    assert fetch_answerfile(args, tmp_path, io) == "<installation/>\n"
    assert runner.calls == [[str(tmp_path / "answerfile-generator")]]
    assert (tmp_path / "answerfile-generator").stat().st_mode & 0o777 == 0o755
    io = transport(FakeSession(file_server({"gen": b"echo no shebang\n"})), runner)
    with pytest.raises(SourceError, match="does not start with #!"):
        fetch_answerfile(args, tmp_path, io)


def test_no_answer_file_on_the_command_line_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="answerfile=URL"):
        fetch_answerfile(parse_cmdline("install"), tmp_path, transport())


def test_validate_gives_the_model() -> None:
    answer = validate_answerfile(EXAMPLE)
    assert answer.sources[0].location == "http://192.168.77.1:8080/repo/"
    assert repository_url(answer.sources[0], None) == "http://192.168.77.1:8080/repo/"


def test_validate_refuses_a_bad_answer_file_with_every_problem() -> None:
    with pytest.raises(AnswerFileError) as caught:
        validate_answerfile("<installation><bogus/></installation>")
    assert caught.value.problems


@pytest.mark.parametrize(
    ("source", "server", "expected"),
    [
        (Source(SourceType.URL, "http://r/repo"), None, "http://r/repo/"),
        (Source(SourceType.NFS, "srv:/export/repo/"), None, "nfs://srv:/export/repo/"),
        (Source(SourceType.LOCAL), "http://10.0.0.1:8080/", "http://10.0.0.1:8080/repo/"),
    ],
)
def test_repository_url(source: Source, server: str | None, expected: str) -> None:
    assert fetch.repository_url(source, server) == expected


def test_a_local_source_needs_the_server() -> None:
    with pytest.raises(InputError, match=r"no netinstall.server="):
        fetch.repository_url(Source(SourceType.LOCAL), None)


def test_an_error_reply_says_why() -> None:
    said = b'{"error": "profile lab: the answer file it renders is invalid: line 3: <timezone>"}'
    kind = {"Content-Type": "application/json; charset=utf-8"}
    io = transport(FakeSession(lambda *_: FakeResponse(500, said, kind)))
    io.sleep = lambda _: None
    with pytest.raises(SourceError, match=r"HTTP 500: profile lab: .* line 3: <timezone>$"):
        fetch_text("http://srv/answerfile/m?token=secret", retries=2, transport=io)
    html = FakeResponse(404, b"<html>\n  <b>Not   here</b>\n" + b"x" * 300)
    io = transport(FakeSession(lambda *_: html))
    with pytest.raises(SourceError, match=r"HTTP 404 Not Found: <html> <b>Not here</b> x+\.\.\.$"):
        fetch_text("http://srv/a.xml", transport=io)


def test_what_is_read_into_memory_stops_at_its_limit_and_is_not_retried() -> None:
    session = FakeSession(file_server({"s.sh": b"#!/bin/sh\n" + b"#" * fetch.TEXT_LIMIT}))
    with pytest.raises(SourceError, match=r"\(1 attempt\): the server announces 16777226 bytes"):
        fetch.fetch_bytes("http://srv/s.sh", transport=transport(session))
    unannounced = FakeResponse(200, b"x" * (fetch.TEXT_LIMIT + 1))
    del unannounced.headers["Content-Length"]
    with pytest.raises(SourceError, match=r"the body is larger than 16777216 bytes; at most"):
        fetch.fetch_bytes(
            "http://srv/s.sh", transport=transport(FakeSession(lambda *_: unannounced))
        )
    assert fetch.fetch_bytes("http://srv/s.sh", transport=transport(session), limit=1 << 25)


def test_the_answer_file_limit_is_the_validators(tmp_path: Path) -> None:
    body = EXAMPLE.encode() + b" " * (answerfile.limits.MAX_BYTES - len(EXAMPLE) + 1)
    args = parse_cmdline("install answerfile=http://srv/a")
    with pytest.raises(SourceError, match=r"announces 1048577 bytes; at most 1048576 are read"):
        fetch_answerfile(args, tmp_path, transport(FakeSession(file_server({"a": body}))))
    trimmed = FakeSession(file_server({"a": body[:-1]}))
    assert fetch_answerfile(args, tmp_path, transport(trimmed)) == body[:-1].decode()


def test_a_deflate_body_is_inflated_and_an_unknown_encoding_refused() -> None:
    packed = zlib.compress(EXAMPLE.encode())
    deflate = FakeSession(lambda *_: FakeResponse(200, packed, {"Content-Encoding": "deflate"}))
    assert fetch_text("http://srv/a", transport=transport(deflate)) == EXAMPLE
    assert deflate.calls[0][2]["headers"] == {"Accept-Encoding": "gzip, deflate"}
    brotli = FakeSession(lambda *_: FakeResponse(200, b"??", {"Content-Encoding": "br"}))
    with pytest.raises(SourceError, match=r"\(1 attempt\): the server sent Content-Encoding 'br'"):
        fetch_text("http://srv/a", transport=transport(brotli))
    cut = FakeSession(lambda *_: FakeResponse(200, packed[:-8], {"Content-Encoding": "deflate"}))
    with pytest.raises(SourceError, match=r"\(5 attempts\): the deflate body ends early"):
        fetch_text("http://srv/a", transport=transport(cut))


def test_the_deadline_counts_from_the_request_on_the_transports_clock() -> None:
    now = [0.0]

    class Slow(FakeResponse):
        def __init__(self) -> None:
            super().__init__(200, b"x" * 10_000)
            read1 = self.raw.read1

            def tick(size: int = -1) -> bytes:
                now[0] += 10.0  # each read takes ten seconds
                return read1(100)

            self.raw.read1 = tick  # type: ignore[method-assign]

    io = transport(FakeSession(lambda *_: Slow()))
    io.clock = lambda: now[0]
    with pytest.raises(SourceError, match=r"\(1 attempt\): still arriving after 120 s \(got 1300"):
        fetch_text("http://srv/a", transport=io)
