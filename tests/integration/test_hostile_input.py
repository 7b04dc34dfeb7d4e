"""Hostile input against real servers and files (issue 17, items 4 and 8): answer files
that never end, inflate, trickle or stall over real HTTP on loopback; the validator on
``/dev/zero``, a 200 MiB file and a 50 MB file of unknown elements; payload downloads
cut mid-file, corrupted, or served by a server that ignores Range."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from answerfile import limits
from answerfile.bootargs import parse_cmdline
from common.errors import SourceError
from installer_core.download import check_payload, download_payload, learn_payload
from installer_core.fetch import Transport, fetch_answerfile
from installer_core.plan import FetchPlan, Staging, StagingPlace
from netinstall.cli import main
from tests.repository import treeinfo_text

pytestmark = pytest.mark.integration

EXAMPLE = (Path(limits.__file__).parent / "examples/fresh.xml").read_bytes()
Answer = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """HTTP/1.1 on loopback; each path answered by a function of the test's choosing."""

    def __init__(self) -> None:
        self.routes: dict[str, Answer] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def handle(self) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    super().handle()  # a client that gave up, as it should, is no error

            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                server.requests.append((path, self.headers.get("Range")))
                answer = server.routes.get(path)
                if answer is None:
                    self.send_error(404)
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    answer(self)

            def do_HEAD(self) -> None:
                self.do_GET()

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.http.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def server() -> Iterator[Server]:
    served = Server()
    thread = threading.Thread(target=served.http.serve_forever, daemon=True)
    thread.start()
    yield served
    served.http.shutdown()
    served.http.server_close()
    thread.join(timeout=10)


def _headers(handler: BaseHTTPRequestHandler, **headers: str) -> None:
    handler.send_response(200)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()


def _fetch(url: str, **transport: float) -> tuple[str, float, int]:
    """fetch_answerfile of ``url`` failing: (its message, seconds taken, peak bytes held)."""
    io = Transport(sleep=lambda _s: None, **transport)  # type: ignore[arg-type]
    args = parse_cmdline(f"install answerfile={url}?token=SECRET")
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(SourceError) as caught:
            fetch_answerfile(args, Path("/nonexistent"), io)
        return str(caught.value), time.monotonic() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- the installer's fetch --------------------------------------------------------------


def test_a_normal_answer_file_plain_or_gzip_is_read(server: Server) -> None:
    server.routes["/plain"] = lambda h: (
        _headers(h, Content_Length=str(len(EXAMPLE))),
        h.wfile.write(EXAMPLE),
    )
    packed = gzip.compress(EXAMPLE)
    server.routes["/gzip"] = lambda h: (
        _headers(h, Content_Length=str(len(packed)), Content_Encoding="gzip"),
        h.wfile.write(packed),
    )
    for path in ("/plain", "/gzip"):
        args = parse_cmdline(f"install answerfile={server.url(path)}")
        assert fetch_answerfile(args, Path("/nonexistent"), Transport()) == EXAMPLE.decode()


def test_an_announced_200_mib_body_is_refused_before_reading_it(server: Server) -> None:
    def big(handler: BaseHTTPRequestHandler) -> None:
        _headers(handler, Content_Length=str(200 << 20))
        for _ in range(200):
            handler.wfile.write(b" " * (1 << 20))

    server.routes["/big"] = big
    message, seconds, peak = _fetch(server.url("/big"))
    print(f"200 MiB announced: refused in {seconds:.3f} s, peak {peak >> 10} KiB held")
    assert message.endswith(
        "(1 attempt): the server announces 209715200 bytes; at most 1048576 are read here"
    )
    assert "SECRET" not in message
    assert seconds < 2


def test_an_endless_body_is_refused_just_past_the_cap(server: Server) -> None:
    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.protocol_version = "HTTP/1.0"  # no length: the body ends when the server closes
        _headers(handler, Connection="close")
        while True:
            handler.wfile.write(b"<x/>" * 16384)

    server.routes["/endless"] = endless
    message, seconds, peak = _fetch(server.url("/endless"))
    print(f"endless body: refused in {seconds:.3f} s, peak {peak >> 10} KiB held")
    assert message.endswith(
        "(1 attempt): the body is larger than 1048576 bytes; at most 1048576 are read here"
    )
    assert peak < 4 * limits.MAX_BYTES


def test_a_gzip_body_inflating_to_200_mib_is_refused_without_inflating_it(
    server: Server,
) -> None:
    bomb = gzip.compress(b"\0" * (200 << 20), compresslevel=9)
    assert len(bomb) < 300 << 10

    def send(handler: BaseHTTPRequestHandler) -> None:
        _headers(handler, Content_Length=str(len(bomb)), Content_Encoding="gzip")
        handler.wfile.write(bomb)

    server.routes["/bomb"] = send
    message, seconds, peak = _fetch(server.url("/bomb"))
    print(
        f"{len(bomb) >> 10} KiB gzip of 200 MiB: refused in {seconds:.3f} s, peak {peak >> 10} KiB"
    )
    assert message.endswith(
        "(1 attempt): the body is larger than 1048576 bytes once its gzip is undone;"
        " at most 1048576 are read here"
    )
    assert peak < 4 * limits.MAX_BYTES  # never inflated whole: 200 MiB would show here


def test_a_trickling_body_is_cut_at_the_deadline(server: Server) -> None:
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        _headers(handler, Content_Length=str(len(EXAMPLE)))
        for byte in EXAMPLE:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.05)

    server.routes["/trickle"] = trickle
    message, seconds, _ = _fetch(server.url("/trickle"), deadline=1.0, timeout=5.0)
    print(f"1 byte per 50 ms: given up after {seconds:.2f} s")
    assert "(1 attempt): still arriving after 1 s (got " in message
    assert 1.0 <= seconds < 2.0  # each read returns what came: no read waits for a full chunk


def test_a_stalled_body_times_out_and_is_retried(server: Server) -> None:
    def stall(handler: BaseHTTPRequestHandler) -> None:
        _headers(handler, Content_Length=str(len(EXAMPLE)))
        handler.wfile.write(EXAMPLE[:100])
        handler.wfile.flush()
        time.sleep(3)

    server.routes["/stall"] = stall
    message, seconds, _ = _fetch(server.url("/stall"), timeout=0.5)
    print(f"stalled after 100 bytes: given up after {seconds:.2f} s (5 attempts)")
    assert "(5 attempts): " in message
    assert "timed out" in message
    assert seconds < 5


def test_a_body_cut_short_of_its_length_is_retried_not_used(server: Server) -> None:
    calls: list[int] = []

    def cut(handler: BaseHTTPRequestHandler) -> None:
        calls.append(1)
        size = len(EXAMPLE) if len(calls) == 3 else len(EXAMPLE) // 2
        _headers(handler, Content_Length=str(len(EXAMPLE)), Connection="close")
        handler.wfile.write(EXAMPLE[:size])
        handler.close_connection = True

    server.routes["/cut"] = cut
    args = parse_cmdline(f"install answerfile={server.url('/cut')}")
    text = fetch_answerfile(args, Path("/nonexistent"), Transport(sleep=lambda _s: None))
    assert text == EXAMPLE.decode()
    assert len(calls) == 3


# --- the validator -------------------------------------------------------------------


def _validate(path: str) -> tuple[int, list[str], float]:
    started = time.monotonic()
    done = CliRunner().invoke(main, ["answerfile", "validate", path])
    seconds = time.monotonic() - started
    return done.exit_code, done.output.splitlines(), seconds


def _refused_quickly(path: str, what: str) -> None:
    code, lines, seconds = _validate(path)
    print(f"answerfile validate {what}: exit {code} in {seconds:.3f} s: {lines}")
    assert code == 2
    assert lines == [f"{path}: {limits.size_problem()}"]
    assert seconds < 1.0


def test_validate_refuses_dev_zero_at_once() -> None:
    _refused_quickly("/dev/zero", "/dev/zero")


def test_validate_refuses_a_200_mib_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    with path.open("wb") as out:
        out.write(b"<installation>")
        out.truncate(200 << 20)
    _refused_quickly(str(path), "a 200 MiB file")


def test_validate_refuses_50_mb_of_unknown_elements_at_once(tmp_path: Path) -> None:
    path = tmp_path / "unknown.xml"
    with path.open("wb") as out:
        out.write(b"<installation>")
        for _ in range(50):
            out.write(b"<unknown-element/>" * 55_556)
        out.write(b"</installation>")
    assert path.stat().st_size > 50_000_000
    _refused_quickly(str(path), "50 MB of unknown elements")


def test_validate_lists_at_most_the_bound_for_1_mib_of_unknown_elements(tmp_path: Path) -> None:
    path = tmp_path / "unknown.xml"
    body = b"<unknown/>" * ((limits.MAX_BYTES - 40) // 10)
    path.write_bytes(b"<installation>" + body + b"</installation>")
    code, lines, seconds = _validate(str(path))
    print(f"1 MiB of unknown elements: exit {code}, {len(lines)} lines in {seconds:.3f} s")
    assert code == 2
    assert len(lines) == limits.MAX_PROBLEMS + 1
    assert seconds < 1.0


# --- payload downloads that survive a cut ------------------------------------------------

PAYLOAD = {
    "boot/xen.gz": b"X" * 50_000,
    "boot/vmlinuz": bytes(range(256)) * 1000,
    "boot/initrd.img": b"I" * 80_000,
    "dom0-rootfs.tar.zst": bytes(range(255, -1, -1)) * 8000,  # 2 MB
}
ROOTFS = "/repo/dom0-rootfs.tar.zst"


def _file(data: bytes, *, cut_first_after: int | None = None, ranges: bool = True) -> Answer:
    """Serve ``data``; the first GET is cut after ``cut_first_after`` bytes; Range is
    honoured unless ``ranges`` is False (then every answer is the whole file, 200)."""
    gets: list[int] = []

    def answer(handler: BaseHTTPRequestHandler) -> None:
        wanted = handler.headers.get("Range", "")
        start = int(wanted[6:].rstrip("-")) if ranges and wanted.startswith("bytes=") else 0
        handler.send_response(206 if start else 200)
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.send_header("Content-Length", str(len(data) - start))
        handler.end_headers()
        if handler.command == "HEAD":
            return
        gets.append(start)
        body = data[start:]
        if cut_first_after is not None and len(gets) == 1:
            handler.wfile.write(body[:cut_first_after])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)  # the cable is pulled mid-file
            return
        handler.wfile.write(body)

    return answer


def _serve_repository(server: Server, files: dict[str, bytes], **rootfs: object) -> str:
    server.routes["/repo/.treeinfo"] = lambda h: (
        _headers(h, Content_Length=str(len(text))),
        None if h.command == "HEAD" else h.wfile.write(text),
    )
    text = treeinfo_text(PAYLOAD, "0.9.1", "feedbeef").encode()
    for name, data in files.items():
        options = rootfs if "/" + name == ROOTFS.removeprefix("/repo") else {}
        server.routes[f"/repo/{name}"] = _file(data, **options)  # type: ignore[arg-type]
    return server.url("/repo/")


def _download_into(tmp_path: Path, repo_url: str) -> dict[str, bytes]:
    io = Transport(sleep=lambda _s: None, timeout=10)
    info, files = learn_payload(repo_url, io)
    staging = Staging(StagingPlace.RAM, tmp_path / "payload")
    got = download_payload(FetchPlan(repo_url, info, files, ()), staging, transport=io)
    return {name: path.read_bytes() for name, path in got.files.items()}


def test_a_download_cut_mid_file_resumes_with_a_range_request(
    server: Server, tmp_path: Path
) -> None:
    url = _serve_repository(server, PAYLOAD, cut_first_after=700_000)
    assert _download_into(tmp_path, url) == PAYLOAD
    asked = [wanted for path, wanted in server.requests if path == ROOTFS]
    assert asked[0] is None  # the HEAD for the size
    assert asked[1] is None  # the first GET, cut
    assert asked[2] is not None
    resumed_at = int(asked[2][6:].rstrip("-"))
    assert 0 < resumed_at <= 700_000  # what arrived before the cut was kept
    assert len(asked) == 3


def test_a_server_that_ignores_range_gets_a_full_download(server: Server, tmp_path: Path) -> None:
    url = _serve_repository(server, PAYLOAD, cut_first_after=700_000, ranges=False)
    assert _download_into(tmp_path, url) == PAYLOAD
    asked = [wanted for path, wanted in server.requests if path == ROOTFS]
    assert len(asked) == 3
    assert asked[2] is not None  # asked to resume, answered 200 with the whole file:
    assert asked[2].startswith("bytes=")  # written from the start, not appended
    assert (tmp_path / "payload/dom0-rootfs.tar.zst").stat().st_size == len(
        PAYLOAD["dom0-rootfs.tar.zst"]
    )


def test_a_corrupted_payload_is_refused_before_any_disk_write(
    server: Server, tmp_path: Path
) -> None:
    bad = bytearray(PAYLOAD["dom0-rootfs.tar.zst"])
    bad[1_000_000] ^= 0x01  # one bit of one byte
    url = _serve_repository(server, {**PAYLOAD, "dom0-rootfs.tar.zst": bytes(bad)})
    io = Transport(sleep=lambda _s: None, timeout=10)
    info, files = learn_payload(url, io)
    expected = info.checksums["dom0-rootfs.tar.zst"]
    got = hashlib.sha256(bad).hexdigest()
    # staged on disk: checked as served, before the partition step, nothing kept
    with pytest.raises(SourceError) as caught:
        check_payload(FetchPlan(url, info, files, ()), io)
    assert str(caught.value) == (
        f"sha256 mismatch for dom0-rootfs.tar.zst: expected {expected}, got {got}"
    )
    assert list(tmp_path.iterdir()) == []
    # in RAM (the usual case): the download step itself refuses it, before partition
    with pytest.raises(SourceError, match=r"sha256 mismatch for dom0-rootfs\.tar\.zst"):
        _download_into(tmp_path, url)
