"""The installer's payload download against a real HTTP server on loopback (Range support):
a full download verifies, a truncated partial file resumes with a Range request, a
corrupted file fails with the sha256 mismatch message."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from common.errors import SourceError
from installer_core.download import Payload, download_payload, learn_payload
from installer_core.fetch import Transport
from installer_core.plan import FetchPlan, Staging, StagingPlace
from tests.repository import write_repository

pytestmark = pytest.mark.integration

FILES = {
    "boot/xen.gz": b"X" * 100_000,
    "boot/vmlinuz": bytes(range(256)) * 4000,
    "boot/initrd.img": b"I" * 300_000,
    "dom0-rootfs.tar.zst": bytes(range(255, -1, -1)) * 12000,
}


class Repo:
    """A directory served over HTTP/1.1 with single Range requests; records Range headers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ranges: list[tuple[str, str | None]] = []
        repo = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_HEAD(self) -> None:
                self.answer(body=False)

            def do_GET(self) -> None:
                self.answer(body=True)

            def answer(self, *, body: bool) -> None:
                path = repo.root / self.path.lstrip("/").partition("?")[0]
                wanted = self.headers.get("Range")
                repo.ranges.append((self.path, wanted))
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start, status = 0, 200
                if wanted and wanted.startswith("bytes="):
                    start = int(wanted[6:].rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if body:
                    self.wfile.write(data[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/repo/"


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    root = tmp_path / "served"
    write_repository(root / "repo", FILES, "0.9.1", "feedbeef")
    served = Repo(root)
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()
    thread.join(timeout=10)


def _download(tmp_path: Path, repo_url: str) -> Payload:
    """What the plan learns (.treeinfo, the sizes), then the download step into RAM."""
    io = Transport(sleep=lambda _s: None, timeout=10)
    info, files = learn_payload(repo_url, io)
    staging = Staging(StagingPlace.RAM, tmp_path / "work/payload")
    return download_payload(FetchPlan(repo_url, info, files, ()), staging, transport=io)


def test_the_payload_downloads_and_verifies(tmp_path: Path, repo: Repo) -> None:
    got = _download(tmp_path, repo.url)
    assert got.version == "0.9.1"
    for name, data in FILES.items():
        assert got.files[name].read_bytes() == data


def test_a_truncated_file_resumes_with_a_range_request(tmp_path: Path, repo: Repo) -> None:
    partial = tmp_path / "work/payload/dom0-rootfs.tar.zst"
    partial.parent.mkdir(parents=True)
    data = FILES["dom0-rootfs.tar.zst"]
    partial.write_bytes(data[:1_000_000])
    _download(tmp_path, repo.url)
    assert partial.read_bytes() == data
    gets = [(path, wanted) for path, wanted in repo.ranges if path.endswith("rootfs.tar.zst")]
    assert ("/repo/dom0-rootfs.tar.zst", "bytes=1000000-") in gets
    assert ("/repo/dom0-rootfs.tar.zst", None) in gets  # the HEAD for the size


def test_a_corrupted_file_fails_with_the_mismatch_message(tmp_path: Path, repo: Repo) -> None:
    served = repo.root / "repo/boot/initrd.img"
    served.write_bytes(b"corrupted" + FILES["boot/initrd.img"][9:])
    got = hashlib.sha256(served.read_bytes()).hexdigest()
    expected = hashlib.sha256(FILES["boot/initrd.img"]).hexdigest()
    with pytest.raises(SourceError) as caught:
        _download(tmp_path, repo.url)
    assert str(caught.value) == (
        f"sha256 mismatch for boot/initrd.img: expected {expected}, got {got}"
    )
