"""installer_core.treeinfo and .download: the builder's .treeinfo read back, Range resume,
sha256 verification before any disk is touched; .treeinfo and the sizes learnt while
planning."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from common.errors import SourceError
from hypervisor_payload import treeinfo as writer
from installer_core import download, planning
from installer_core.download import download_file, download_payload, learn_payload
from installer_core.plan import FetchPlan, Staging, StagingPlace
from installer_core.treeinfo import parse_treeinfo
from partitioning.model import MiB
from tests.unit.test_installer_fakes import (
    FakeResponse,
    FakeSession,
    file_server,
    sha,
    transport,
)

FILES = {
    "boot/xen.gz": b"xen" * 1000,
    "boot/vmlinuz": b"kernel" * 1000,
    "boot/initrd.img": b"initrd" * 1000,
    "dom0-rootfs.tar.zst": b"root" * 5000,
    "XS-REPOSITORY-LIST": b"pack1\n",
}


def treeinfo_text(files: dict[str, bytes] = FILES, **changes: object) -> str:
    fields: dict[str, object] = {
        "version": "0.3.0",
        "build": "abc123",
        "kernel": "boot/vmlinuz",
        "initrd": "boot/initrd.img",
        "xen": "boot/xen.gz",
        "archive": "dom0-rootfs.tar.zst",
        "compression": "zstd",
        "checksums": {name: sha(data) for name, data in files.items()},
        "root_xen": "/boot/xen-4.17-amd64.gz",
    }
    fields.update(changes)
    return writer.render_treeinfo(writer.TreeInfo(**fields))  # type: ignore[arg-type]


def test_the_builders_treeinfo_is_read_back() -> None:
    info = parse_treeinfo(treeinfo_text())
    assert (info.version, info.build, info.compression) == ("0.3.0", "abc123", "zstd")
    assert (info.xen, info.kernel, info.initrd) == (
        "boot/xen.gz",
        "boot/vmlinuz",
        "boot/initrd.img",
    )
    assert info.root_xen == "/boot/xen-4.17-amd64.gz"
    assert info.root_kernel is None
    assert info.files() == (
        "boot/xen.gz",
        "boot/vmlinuz",
        "boot/initrd.img",
        "dom0-rootfs.tar.zst",
        "XS-REPOSITORY-LIST",
    )
    assert info.checksums["boot/xen.gz"] == sha(FILES["boot/xen.gz"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[general]\nproduct = other\n", "product=other: expected netinstall"),
        ("not an ini", "not a valid INI file"),
        (treeinfo_text().replace("sha256:", "md5:", 1), "expected sha256:"),
        (treeinfo_text().replace("boot/xen.gz = sha256", "boot/other = sha256"), "boot/xen.gz"),
        (treeinfo_text().replace("xen = boot/xen.gz", "xen = ../xen.gz"), "plain path"),
        (treeinfo_text().replace("version = 0.3.0\n", ""), r"\[general\] has no version="),
    ],
)
def test_a_bad_treeinfo_is_named(text: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_treeinfo(text)


def test_a_partial_file_is_resumed_with_a_range_request(tmp_path: Path) -> None:
    data = FILES["dom0-rootfs.tar.zst"]
    dest = tmp_path / "root.tar"
    dest.write_bytes(data[:7000])
    session = FakeSession(file_server({"repo/root.tar": data}))
    download_file("http://s/repo/root.tar", dest, sha(data), name="r", io=transport(session))
    assert dest.read_bytes() == data
    assert [kwargs["headers"] for _m, _u, kwargs in session.calls] == [
        {"Accept-Encoding": "identity", "Range": "bytes=7000-"}
    ]


def test_a_dropped_connection_resumes_where_it_stopped(tmp_path: Path) -> None:
    data = bytes(range(256)) * 20000  # several chunks
    answers = [FakeResponse(200, data, break_after=1 << 20)]

    def handle(method: str, url: str, headers: dict[str, str]) -> FakeResponse:
        if answers:
            return answers.pop(0)
        return file_server({"f": data})(method, url, headers)

    session = FakeSession(handle)
    dest = tmp_path / "f"
    download_file("http://s/f", dest, sha(data), name="f", io=transport(session))
    assert dest.read_bytes() == data
    assert session.calls[1][2]["headers"]["Range"] == f"bytes={1 << 20}-"


def test_an_http_file_is_hashed_as_it_arrives_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytes(range(256)) * 20000  # several chunks
    reads: list[str] = []
    real_open = Path.open

    def counting_open(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if "r" in mode:
            reads.append(self.name)
        return real_open(self, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", counting_open)
    served = transport(FakeSession(file_server({"f": data})))
    download_file("http://s/f", tmp_path / "f", sha(data), name="f", io=served)
    assert reads == []  # verified from the bytes as they came
    # A resumed try hashes the part it continues, once; the digest still decides.
    (tmp_path / "g").write_bytes(data[:5000])
    with pytest.raises(SourceError, match="sha256 mismatch"):
        download_file("http://s/f", tmp_path / "g", "0" * 64, name="f", io=served)
    assert reads[0] == "g"


def test_a_server_without_ranges_restarts_the_file(tmp_path: Path) -> None:
    data = b"fresh content" * 10
    dest = tmp_path / "f"
    dest.write_bytes(b"stale partial")
    session = FakeSession(file_server({"f": data}, ranges=False))
    download_file("http://s/f", dest, sha(data), name="f", io=transport(session))
    assert dest.read_bytes() == data


def test_a_complete_file_answered_with_416_is_verified(tmp_path: Path) -> None:
    data = b"done already"
    dest = tmp_path / "f"
    dest.write_bytes(data)
    session = FakeSession(file_server({"f": data}))
    download_file("http://s/f", dest, sha(data), name="f", io=transport(session))
    assert len(session.calls) == 1


def test_a_bad_resumed_file_is_downloaded_again_before_giving_up(tmp_path: Path) -> None:
    data = b"the real content" * 100
    dest = tmp_path / "f"
    dest.write_bytes(b"X" * 100)  # a corrupt partial
    session = FakeSession(file_server({"f": data}))
    download_file("http://s/f", dest, sha(data), name="f", io=transport(session))
    assert dest.read_bytes() == data
    assert [kwargs["headers"] for _m, _u, kwargs in session.calls] == [
        {"Accept-Encoding": "identity", "Range": "bytes=100-"},
        {"Accept-Encoding": "identity"},
    ]


def test_a_sha256_mismatch_names_the_file_and_both_digests(tmp_path: Path) -> None:
    session = FakeSession(file_server({"boot/xen.gz": b"tampered"}))
    expected = "0" * 64
    with pytest.raises(SourceError) as caught:
        download_file(
            "http://s/boot/xen.gz",
            tmp_path / "xen.gz",
            expected,
            name="boot/xen.gz",
            io=transport(session),
        )
    assert str(caught.value) == (
        f"sha256 mismatch for boot/xen.gz: expected {expected}, got {sha(b'tampered')}"
    )


def _repo(**changes: bytes) -> dict[str, bytes]:
    repo = {f"repo/{name}": data for name, data in FILES.items()}
    repo["repo/.treeinfo"] = treeinfo_text().encode()
    repo.update({f"repo/{name}": data for name, data in changes.items()})
    return repo


def _fetch_plan(session: FakeSession) -> FetchPlan:
    info, files = learn_payload("http://s/repo/", transport(session))
    return FetchPlan("http://s/repo/", info, files, ())


def test_planning_learns_treeinfo_and_every_size_without_downloading(tmp_path: Path) -> None:
    session = FakeSession(file_server(_repo()))
    plan = _fetch_plan(session)
    assert plan.treeinfo is not None
    assert plan.treeinfo.version == "0.3.0"
    assert [f.name for f in plan.files] == list(plan.treeinfo.files())
    assert {f.name: f.size for f in plan.files} == {n: len(d) for n, d in FILES.items()}
    assert plan.size == sum(len(d) for d in FILES.values())
    assert plan.files[0].url == "http://s/repo/boot/xen.gz"
    assert [m for m, _u, _k in session.calls] == ["GET"] + ["HEAD"] * len(FILES)
    assert session.calls[0][1] == "http://s/repo/.treeinfo"


def test_staging_is_ram_when_the_payload_fits_with_256_mib_to_spare_else_disk(
    tmp_path: Path,
) -> None:
    from tests.unit.test_installer_fakes import make_plan, payload_found

    need = 100 * MiB
    sizes = {"dom0-rootfs.tar.zst": need - 30 * MiB}  # the other three: 10 MiB each
    fits = make_plan(
        tmp_path,
        memory=planning.MemoryFound(available=357 * MiB),
        payload=payload_found(sizes),
    )
    assert fits.staging is not None
    assert fits.staging.place is StagingPlace.RAM
    assert fits.staging.directory == tmp_path / "work/payload"
    short = make_plan(
        tmp_path,
        memory=planning.MemoryFound(available=356 * MiB),
        payload=payload_found(sizes),
    )
    assert short.staging is not None
    assert short.staging.place is StagingPlace.BACKUP
    assert short.staging.device == Path("/dev/sda2")
    assert short.staging.directory == tmp_path / "work/staging-disk/payload"


def test_download_payload_stages_and_verifies_everything(tmp_path: Path) -> None:
    messages: list[str] = []
    session = FakeSession(file_server(_repo()))
    staging = Staging(StagingPlace.RAM, tmp_path / "work/payload")
    got = download_payload(_fetch_plan(session), staging, messages.append, transport(session))
    assert got.version == "0.3.0"
    assert set(got.files) == set(FILES)
    for name, data in FILES.items():
        assert got.files[name] == tmp_path / "work/payload" / name
        assert got.files[name].read_bytes() == data
    assert [m for m in messages if m.startswith("boot/xen.gz")] == ["boot/xen.gz 100%"]


def test_a_corrupt_payload_fails_the_download_step(tmp_path: Path) -> None:
    session = FakeSession(file_server(_repo(**{"boot/vmlinuz": b"not the kernel"})))
    staging = Staging(StagingPlace.RAM, tmp_path / "work/payload")
    with pytest.raises(SourceError, match="sha256 mismatch for boot/vmlinuz: expected"):
        download_payload(_fetch_plan(session), staging, transport=transport(session))


def test_progress_is_reported_every_ten_percent() -> None:
    seen: list[str] = []
    percent = download._Percent(seen.append, "f")
    for value in (1, 5, 10, 11, 19, 35, 36, 99, 100):
        percent(value)
    assert seen == ["f 10%", "f 35%", "f 99%", "f 100%"]


def test_no_network_gives_a_source_error(tmp_path: Path) -> None:
    io = transport(FakeSession(lambda *_: requests.ConnectionError("unreachable")))
    with pytest.raises(SourceError, match=r"cannot read http://s/f \(5 attempts\): unreachable"):
        download_file("http://s/f", tmp_path / "f", "0" * 64, name="f", io=io)
