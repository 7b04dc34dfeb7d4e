"""The repository on a mirror: nginx serves build/repo, the installer downloads from it.

The server's answer file names the mirror (``server init --repo URL#sha256=...``, as
docs/deployment.md shows), and the installer's own steps (validate the answer file,
read and check .treeinfo, download and verify every file) run against a real nginx,
unpacked from Debian's package as the benchmarks do (never installed), on loopback.
A mirror that serves a tampered file is refused by that file's checksum; one whose
.treeinfo was altered to match is refused by the answer file's pin, before any download.
No QEMU: the installer's code runs here.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from common.errors import SourceError
from installer_core.download import check_payload, download_payload, learn_payload
from installer_core.fetch import Transport, repository_url, validate_answerfile
from installer_core.plan import FetchPlan, Staging, StagingPlace
from pxe_server.registry import Registry
from pxe_server.server import Server
from tests.integration.conftest import netinstall

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2] / "build" / "repo"
MAC = "52:54:00:4d:49:52"
NGINX_TEMP = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@dataclass(frozen=True)
class Mirror:
    base: str  # http://127.0.0.1:PORT
    version: str
    pin: str  # sha256 of the true .treeinfo
    access_log: Path

    def url(self, tree: str, *, pinned: bool = True) -> str:
        return f"{self.base}/{tree}/{self.version}/" + (f"#sha256={self.pin}" if pinned else "")


def _forge(www: Path, version: str) -> None:
    """``tampered``: the repository with boot/xen.gz changed; ``forged``: the same with a
    .treeinfo rewritten to that xen.gz's checksum (a mirror that covers its tracks)."""
    xen = (REPO / "boot/xen.gz").read_bytes()
    bad = bytearray(xen)
    bad[len(bad) // 2] ^= 0xFF
    good_sum, bad_sum = hashlib.sha256(xen).hexdigest(), hashlib.sha256(bad).hexdigest()
    for tree in ("tampered", "forged"):
        root = www / tree / version
        (root / "boot").mkdir(parents=True)
        for path in REPO.rglob("*"):
            if path.is_file():
                (root / path.relative_to(REPO)).symlink_to(path)
        (root / "boot/xen.gz").unlink()
        (root / "boot/xen.gz").write_bytes(bytes(bad))
    treeinfo = www / "forged" / version / ".treeinfo"
    treeinfo.unlink()
    treeinfo.write_text((REPO / ".treeinfo").read_text().replace(good_sum, bad_sum))


@pytest.fixture(scope="module")
def mirror() -> Iterator[Mirror]:
    if not (REPO / ".treeinfo").is_file():
        pytest.skip(f"no repository in {REPO} (make images, or symlink build to one that has)")
    from benchmarks.http_servers import free_port, nginx_binary, wait_port

    try:
        binary = nginx_binary()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"nginx could not be unpacked from Debian's package: {exc}")
    version = next(
        line.split("=", 1)[1].strip()
        for line in (REPO / ".treeinfo").read_text().splitlines()
        if line.startswith("version")
    )
    work = Path(tempfile.mkdtemp(prefix="netinstall-mirror-", dir="/tmp"))
    try:
        work.chmod(0o755)  # nginx's worker (user nobody) reads the mirror
        www = work / "www"
        (www / "netinstall").mkdir(parents=True)
        (www / "netinstall" / version).symlink_to(REPO)  # a mirror of build/repo
        _forge(www, version)
        port = free_port()
        # docs/deployment.md's mirror configuration, with a loopback port and its own prefix.
        (work / "nginx.conf").write_text(
            "daemon off; worker_processes 1; pid nginx.pid;\n"
            f"error_log {work}/error.log;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            + "".join(f"  {kind}_temp_path {work}/{kind};\n" for kind in NGINX_TEMP)
            + f"  access_log {work}/access.log;\n"
            f"  server {{\n    listen 127.0.0.1:{port};\n    root {www};\n"
            "    location / {\n      sendfile on;\n      tcp_nopush on;\n"
            "      types { }\n      default_type application/octet-stream;\n"
            "      autoindex off;\n    }\n  }\n}\n"
        )
        child = subprocess.Popen(
            [str(binary), "-p", str(work), "-c", str(work / "nginx.conf")],
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port, child)
            pin = hashlib.sha256((REPO / ".treeinfo").read_bytes()).hexdigest()
            yield Mirror(f"http://127.0.0.1:{port}", version, pin, work / "access.log")
        finally:
            child.terminate()
            child.wait(timeout=10)
    finally:
        shutil.rmtree(work)


def answer_file_from_the_server(tmp_path: Path, repo_url: str) -> str:
    """The host's answer file as the netinstall server hands it out (the install token
    enrols a key, the key fetches it), with the default repository set to ``repo_url``."""
    directory = tmp_path / "srv"
    for argv in (
        ("server", "init", str(directory), "--repo", repo_url),
        ("host", "add", MAC, "--dir", str(directory)),
    ):
        done = netinstall(*argv)
        assert done.returncode == 0, done.stderr
    with Registry.open(directory) as registry:
        token = registry.get_host(MAC).token  # type: ignore[union-attr]
    key = "mirror-test-installer-key-0123456789abcdef"
    with Server(directory, bind="127.0.0.1", tftp_port=0, http_port=0) as server:
        assert server.settings is not None
        base = server.settings.http_base
        enrolled = requests.post(
            f"{base}/api/v1/hosts/{MAC}/enrol",
            json={"key": key},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert enrolled.status_code == 200, enrolled.text
        reply = requests.get(
            f"{base}/answerfile/{MAC}", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
    assert reply.status_code == 200, reply.text
    return reply.text


def fetch_plan(repository: str) -> FetchPlan:
    info, files = learn_payload(repository, Transport(timeout=10), retries=1)
    return FetchPlan(repository, info, files, ())


def test_installer_downloads_and_verifies_the_payload_from_nginx(
    mirror: Mirror, tmp_path: Path
) -> None:
    text = answer_file_from_the_server(tmp_path, mirror.url("netinstall"))
    assert f'<source type="url">{mirror.url("netinstall")}</source>' in text
    repository = repository_url(validate_answerfile(text).sources[0], None)
    assert repository == mirror.url("netinstall")
    plan = fetch_plan(repository)
    assert plan.treeinfo is not None
    assert {f.name: f.size for f in plan.files} == {
        name: (REPO / name).stat().st_size for name in plan.treeinfo.checksums
    }  # every size from nginx's HEAD: the RAM check counts them all
    staging = Staging(StagingPlace.RAM, tmp_path / "payload")
    try:
        payload = download_payload(plan, staging)  # each file's sha256 checked as it arrives
        assert payload.version == mirror.version
        assert set(payload.files) == set(plan.treeinfo.checksums)
        for name, path in payload.files.items():
            assert path.stat().st_size == (REPO / name).stat().st_size
    finally:
        shutil.rmtree(staging.directory, ignore_errors=True)
    served = mirror.access_log.read_text()
    assert f'"GET /netinstall/{mirror.version}/dom0-rootfs.tar.zst HTTP/1.1" 200' in served
    assert f'"GET /netinstall/{mirror.version}/.treeinfo HTTP/1.1" 200' in served


def test_a_tampered_file_on_the_mirror_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    plan = fetch_plan(mirror.url("tampered"))  # its .treeinfo is the true one: the pin holds
    assert plan.treeinfo is not None
    expected = plan.treeinfo.checksums["boot/xen.gz"]
    with pytest.raises(
        SourceError, match=rf"^sha256 mismatch for boot/xen.gz: expected {expected}"
    ):
        check_payload(plan)  # staged on disk: checked as served, before the partition step
    staging = Staging(StagingPlace.RAM, tmp_path / "payload")
    with pytest.raises(
        SourceError, match=rf"^sha256 mismatch for boot/xen.gz: expected {expected}"
    ):
        download_payload(plan, staging)  # in RAM: refused before any disk is touched
    assert not (staging.directory / "boot/vmlinuz").exists()  # it stopped at the first file


def test_a_mirror_that_altered_treeinfo_too_is_refused_by_the_pin(mirror: Mirror) -> None:
    with pytest.raises(SourceError) as caught:
        fetch_plan(mirror.url("forged"))
    assert str(caught.value).startswith(
        f"{mirror.base}/forged/{mirror.version}/.treeinfo has sha256 "
    )
    assert str(caught.value).endswith(
        f", not {mirror.pin} as the answer file's source says: this repository serves "
        "another payload (a stale or altered copy); refused"
    )
    assert f"GET /forged/{mirror.version}/boot/" not in mirror.access_log.read_text()
    # Without the pin only the mirror vouches for itself: the forgery would be learnt.
    plan = fetch_plan(mirror.url("forged", pinned=False))
    assert plan.treeinfo is not None
    assert plan.treeinfo.version == mirror.version
