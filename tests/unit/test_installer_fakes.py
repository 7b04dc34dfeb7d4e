"""Fakes the installer tests share (an HTTP session, a command runner, plans made by the
planner from made-up machine facts), and the tests that keep the fakes honest."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import requests

from answerfile.bootargs import BootArgs, parse_cmdline
from answerfile.model import AnswerFile, Disk, PrimaryDisk, Source, SourceType
from common.errors import CommandError
from common.firmware import Firmware
from common.process import Completed
from installer_core import planning
from installer_core.fetch import Transport
from installer_core.network import Nic
from installer_core.plan import InstallPlan, Paths, PayloadFile
from installer_core.treeinfo import TreeInfo
from partitioning.model import DiskFacts, GiB

TOKEN = "tok-SECRET-1234"
INSTALL_KEY = "key-ENROLLED-5678"  # what the installer enrolled with TOKEN (make_plan)
PASSWORD = "pw-SECRET-5678"


class FakeRaw(io.BytesIO):
    """urllib3's response body: read(), and stream() that may drop the connection."""

    def __init__(self, body: bytes, break_after: int | None) -> None:
        super().__init__(body)
        self.break_after = break_after
        self.decode_content: bool | None = None

    def stream(self, size: int, decode_content: bool | None = None) -> Iterator[bytes]:
        assert decode_content is False  # payload files are checksummed as stored
        body = self.getvalue()
        end = len(body) if self.break_after is None else self.break_after
        for start in range(0, end, size):
            yield body[start : min(start + size, end)]
        if self.break_after is not None:
            raise requests.ConnectionError("connection reset by peer")


class FakeResponse:
    """What requests' streamed response offers that the installer uses."""

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        break_after: int | None = None,
    ) -> None:
        self.status_code = status
        self.reason = {200: "OK", 206: "Partial Content", 404: "Not Found"}.get(status, "")
        self.headers = {"Content-Length": str(len(body)), **(headers or {})}
        self.body = body
        self.raw = FakeRaw(body, break_after)  # the connection drops after break_after bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


Handler = Callable[[str, str, dict[str, str]], FakeResponse | Exception]


@dataclass
class FakeSession:
    """Answers each request with ``handler(method, url, headers)``; records every call."""

    handler: Handler
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def request(self, method: str, url: str, **kwargs: Any) -> FakeResponse:
        self.calls.append((method, url, kwargs))
        answer = self.handler(method, url, dict(kwargs.get("headers") or {}))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def get(self, url: str, **kwargs: Any) -> FakeResponse:
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> FakeResponse:
        return self.request("HEAD", url, **kwargs)


def file_server(files: dict[str, bytes], *, ranges: bool = True) -> Handler:
    """A repository over HTTP: ``files`` by URL path, Range requests when ``ranges``."""

    def handle(method: str, url: str, headers: dict[str, str]) -> FakeResponse:
        path = url.split("://", 1)[1].partition("/")[2].partition("?")[0]
        if path not in files:
            return FakeResponse(404, b"not here")
        body = files[path]
        wanted = headers.get("Range", "")
        if ranges and wanted.startswith("bytes="):
            start = int(wanted[len("bytes=") :].rstrip("-"))
            if start >= len(body):
                return FakeResponse(416, b"")
            headers_out = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            return FakeResponse(206, b"" if method == "HEAD" else body[start:], headers_out)
        return FakeResponse(200, body)

    return handle


@dataclass
class FakeRunner:
    """Records argv lists; ``results`` maps a command name to stdout, an exit code or a hook."""

    results: dict[str, str | int | Callable[[Sequence[str]], str]] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], **_kwargs: Any) -> Completed:
        args = [str(a) for a in argv]
        self.calls.append(args)
        result = self.results.get(Path(args[0]).name, self.results.get(args[0], ""))
        if callable(result):
            result = result(args)
        if isinstance(result, int):
            raise CommandError(args, result, "some output\n", f"{args[0]} broke\n")
        return Completed(tuple(args), 0, result, "")

    def names(self) -> list[str]:
        return [Path(call[0]).name for call in self.calls]


def transport(session: FakeSession | None = None, runner: FakeRunner | None = None) -> Transport:
    """A transport that never sleeps and reaches nothing real."""
    fake = session or FakeSession(lambda *_: requests.ConnectionError("no network in tests"))
    return Transport(
        session=fake,  # type: ignore[arg-type]
        runner=runner or FakeRunner(),
        sleep=lambda _s: None,
        mount_base=Path("/nonexistent"),
    )


MAC = "52:54:00:12:34:56"
ETH0 = Nic("eth0", MAC)
REPO = "http://10.0.2.2:8080/repo/"
TREEINFO = TreeInfo(
    version="1.2.3",
    build="b7",
    xen="boot/xen.gz",
    kernel="boot/vmlinuz",
    initrd="boot/initrd.img",
    archive="dom0-rootfs.tar.zst",
    compression="zstd",
    checksums={
        "boot/xen.gz": "a" * 64,
        "boot/vmlinuz": "b" * 64,
        "boot/initrd.img": "c" * 64,
        "dom0-rootfs.tar.zst": "d" * 64,
    },
)


def paths_in(tmp_path: Path, target: Path | None = None) -> Paths:
    return Paths(
        work=tmp_path / "work",
        target=target or tmp_path / "target",
        log_file=tmp_path / "work" / "install.log",
    )


def payload_found(sizes: dict[str, int] | None = None) -> planning.PayloadFound:
    """``TREEINFO``'s files in ``REPO``; each 10 MiB unless ``sizes`` says otherwise."""
    files = tuple(
        PayloadFile(name, REPO + name, TREEINFO.checksums[name], (sizes or {}).get(name, 10 << 20))
        for name in TREEINFO.files()
    )
    return planning.PayloadFound(TREEINFO, files)


def answer_for(device: str = "sda", **fields: Any) -> AnswerFile:
    """A fresh install's answer file onto ``device`` from ``REPO``."""
    return AnswerFile(
        **{
            "primary_disk": PrimaryDisk(Disk(device)),
            "sources": (Source(SourceType.URL, REPO),),
            **fields,
        }
    )


def make_plan(
    tmp_path: Path,
    answer: AnswerFile | None = None,
    *,
    args: BootArgs | str = "install",
    firmware: Firmware = Firmware.BIOS,
    disk: planning.DiskFound | None = None,
    network: planning.NetworkFound | None = None,
    memory: planning.MemoryFound | None = None,
    payload: planning.PayloadFound | None = None,
    target: Path | None = None,
) -> InstallPlan:
    """The planner's plan for made-up facts: by default a fresh BIOS install onto a 60 GiB
    /dev/sda, the answer file fetched through eth0, 8 GiB of RAM for the payload; with a
    netinstall.token=, the key ``INSTALL_KEY`` enrolled."""
    boot = parse_cmdline(args) if isinstance(args, str) else args
    plan = planning.make_plan(
        boot,
        firmware,
        answer or answer_for(),
        disk=disk or planning.DiskFound(Path("/dev/sda"), DiskFacts(size=60 * GiB)),
        network=network or planning.NetworkFound(fetched_by=ETH0, nics=(ETH0,)),
        memory=memory or planning.MemoryFound(available=8 * GiB),
        learn_payload=lambda _repository: payload or payload_found(),
        paths=paths_in(tmp_path, target),
    )
    return replace(plan, install_key=INSTALL_KEY if boot.token else None)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_file_server_serves_ranges() -> None:
    session = FakeSession(file_server({"repo/a": b"0123456789"}))
    assert session.get("http://h/repo/a", headers={"Range": "bytes=4-"}).body == b"456789"
    assert session.get("http://h/repo/a").status_code == 200
    assert session.get("http://h/repo/b").status_code == 404
    assert session.get("http://h/repo/a", headers={"Range": "bytes=10-"}).status_code == 416


def test_fake_runner_raises_for_exit_codes() -> None:
    runner = FakeRunner({"false": 1, "echo": "hi\n"})
    assert runner(["echo"]).stdout == "hi\n"
    with pytest.raises(CommandError, match="exited with status 1"):
        runner(["false"])
    assert runner.names() == ["echo", "false"]
