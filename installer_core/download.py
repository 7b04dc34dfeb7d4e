"""The payload: what ``.treeinfo`` lists (learnt while planning), downloaded and verified
(SPEC §7).

``learn_payload`` reads ``.treeinfo`` and asks each file's size (HTTP HEAD), so the
plan can choose where the payload is staged. ``download_payload`` downloads every
file there and checks its sha256. In RAM (the usual case) this runs before the
partition step: a payload that does not verify fails the install before any disk
is touched. Too big for RAM, it goes where the plan says (SPEC §7): a fresh
install partitions first and stages it on the new backup partition, an upgrade
in a directory of its own on the existing logs partition.

HTTP downloads resume with ``Range`` requests (a partial file is continued, not
restarted; a server that answers 200 instead of 206 restarts it); other schemes
are copied whole. An HTTP file is hashed as it arrives (a resumed try hashes the part
it continues first), so the payload is not read a second time to be verified.

Staged on disk, the payload can only be written after the partition step. So that a
payload that does not verify still fails the install before any disk is touched,
``check_payload`` first streams every file through sha256 without keeping it (the
``check-payload`` step, before ``partition``): the price is reading the payload
twice, only on machines too small to hold it in RAM.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from answerfile.bootargs import redact_url
from common.errors import NetinstallError, SourceError
from common.process import CommandRunner, run
from installer_core import disk
from installer_core.fetch import (
    CHUNK,
    IDENTITY,
    Transport,
    check_status,
    fetch_bytes,
    fetch_file,
    split_pin,
    with_retries,
)
from installer_core.plan import FetchPlan, PayloadFile, Staging
from installer_core.treeinfo import TreeInfo, parse_treeinfo

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # percent of one file, reported at every ~10%


def join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path


def remote_size(url: str, io: Transport) -> int | None:
    """The size of ``url`` when it can be learnt cheaply (HTTP HEAD, a local file)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        try:
            response = io.session.head(url, timeout=io.timeout, allow_redirects=True)
        except OSError as exc:
            log.warning("HEAD %s: %s", redact_url(url), redact_url(str(exc)))
            return None
        length = response.headers.get("Content-Length", "")
        return int(length) if response.status_code == 200 and length.isdigit() else None
    if parts.scheme == "file":
        path = Path(parts.path)
        return path.stat().st_size if path.is_file() else None
    return None


def _hash_of(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest


def sha256_of(path: Path) -> str:
    return _hash_of(path).hexdigest()


def _http_attempt(url: str, dest: Path, io: Transport, progress: Progress) -> str | None:
    """One try: continue ``dest`` from its current size (206) or start over (200); the
    sha256 of the whole file once written, None when the server had nothing left (416)."""
    have = dest.stat().st_size if dest.exists() else 0
    headers = {**IDENTITY, "Range": f"bytes={have}-"} if have else IDENTITY
    with io.session.get(url, headers=headers, stream=True, timeout=io.timeout) as response:
        if have and response.status_code == 416:
            return None  # nothing left to fetch: the checksum of the file decides
        check_status(response)
        if response.status_code == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                raise SourceError(f"the server resumed at {content_range!r}, not at byte {have}")
            mode, digest = "ab", _hash_of(dest)
        else:
            have, mode, digest = 0, "wb", hashlib.sha256()
        length = response.headers.get("Content-Length", "")
        total = have + int(length) if length.isdigit() else None
        done = have
        with dest.open(mode) as out:
            for chunk in response.raw.stream(CHUNK, decode_content=False):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if total:
                    progress(done * 100 // total)
    return digest.hexdigest()


def download_file(
    url: str,
    dest: Path,
    expected: str,
    *,
    name: str,
    io: Transport,
    progress: Progress = lambda _percent: None,
    retries: int = 5,
    backoff: float = 1.0,
) -> None:
    """Download ``url`` to ``dest`` (resuming what is there) and check its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    http = urlsplit(url).scheme in ("http", "https")
    resumed = http and dest.exists() and dest.stat().st_size > 0
    for last_try in (not resumed, True):
        got = None
        if http:
            got = with_retries(
                url,
                lambda: _http_attempt(url, dest, io, progress),
                retries=retries,
                backoff=backoff,
                transport=io,
            )
        else:
            fetch_file(url, dest, retries=retries, backoff=backoff, transport=io)
        if got is None:
            got = sha256_of(dest)
        if got == expected:
            return
        if last_try:
            raise SourceError(f"sha256 mismatch for {name}: expected {expected}, got {got}")
        log.warning("%s does not verify after resuming: downloading it again", name)
        dest.unlink()


def _digest_attempt(url: str, io: Transport) -> str:
    digest = hashlib.sha256()
    with io.session.get(url, headers=IDENTITY, stream=True, timeout=io.timeout) as response:
        check_status(response)
        for chunk in response.raw.stream(CHUNK, decode_content=False):
            digest.update(chunk)
    return digest.hexdigest()


def remote_sha256(url: str, io: Transport, *, retries: int = 5, backoff: float = 1.0) -> str:
    """The sha256 of what ``url`` serves, streamed and kept nowhere (HTTP only)."""
    return with_retries(
        url, lambda: _digest_attempt(url, io), retries=retries, backoff=backoff, transport=io
    )


def check_payload(
    fetch: FetchPlan, io: Transport | None = None, report: Callable[[str], None] = lambda _m: None
) -> None:
    """Step (``FRESH_STAGED_ON_DISK``, before ``partition``): every file's sha256 checked as
    served, nothing written; a mismatch is the download step's message. Files over other
    schemes than HTTP are left to the download's own check."""
    io = io or Transport()
    for item in fetch.files:
        if urlsplit(item.url).scheme not in ("http", "https"):
            continue
        report(f"checking {item.name}")
        got = remote_sha256(item.url, io)
        if got != item.sha256:
            raise SourceError(f"sha256 mismatch for {item.name}: expected {item.sha256}, got {got}")
        log.info("checked %s as served (sha256 %s)", item.name, got)


class _Percent:
    """Reports a file's progress at every 10% it crosses."""

    def __init__(self, report: Callable[[str], None], name: str) -> None:
        self.report, self.name, self.next = report, name, 10

    def __call__(self, percent: int) -> None:
        if percent < self.next:
            return
        self.next = percent // 10 * 10 + 10
        log.info("download %s %d%%", self.name, percent)
        self.report(f"{self.name} {percent}%")


def learn_payload(
    repository: str, io: Transport, retries: int = 5
) -> tuple[TreeInfo, tuple[PayloadFile, ...]]:
    """``.treeinfo`` and every file it lists, with its size where the server says it.

    ``repository`` may end in ``#sha256=HEX`` (``split_pin``): then ``.treeinfo`` must be
    byte for byte the one the answer file names, or the repository is refused before
    anything is downloaded; every file it lists is checked against it as usual."""
    repository, pin = split_pin(repository)
    url = join(repository, ".treeinfo")
    data = fetch_bytes(url, retries=retries, transport=io)
    if pin is not None and (got := hashlib.sha256(data).hexdigest()) != pin:
        raise SourceError(
            f"{redact_url(url)} has sha256 {got}, not {pin} as the answer file's source "
            "says: this repository serves another payload (a stale or altered copy); refused"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{redact_url(url)} is not UTF-8 text: {exc}") from exc
    info = parse_treeinfo(text)
    log.info("payload %s (build %s): %d files", info.version, info.build, len(info.checksums))
    files = tuple(
        PayloadFile(name, url, info.checksums[name], remote_size(url, io))
        for name in info.files()
        for url in (join(repository, name),)
    )
    if any(f.size is None for f in files):
        log.info("some payload sizes are unknown; the RAM check counts the known ones")
    return info, files


@dataclass(frozen=True)
class Payload:
    """The downloaded, verified payload."""

    version: str
    files: Mapping[str, Path]  # .treeinfo path -> the local file


def download_payload(
    fetch: FetchPlan,
    staging: Staging,
    report: Callable[[str], None] = lambda _message: None,
    transport: Transport | None = None,
    runner: CommandRunner = run,
) -> Payload:
    """Step: every file of the plan, staged where the plan says and verified."""
    if fetch.treeinfo is None:
        raise NetinstallError(f"the plan has no .treeinfo of {redact_url(fetch.repository)}")
    io = transport or Transport()
    if staging.on_disk:
        disk.mount_staging(staging, fetch.size, runner)
    files: dict[str, Path] = {}
    for item in fetch.files:
        dest = staging.directory / item.name
        download_file(
            item.url, dest, item.sha256, name=item.name, io=io, progress=_Percent(report, item.name)
        )
        log.info("verified %s (sha256 %s)", item.name, item.sha256)
        files[item.name] = dest
    return Payload(fetch.treeinfo.version, files)
