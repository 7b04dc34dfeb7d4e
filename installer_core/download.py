"""Download the payload the repository's ``.treeinfo`` lists and verify every sha256 (SPEC §7).

Runs before the partition step: a payload that does not verify fails the
install before any disk is touched, unless it is too big for RAM; then (SPEC §7)
a fresh install partitions early and stages it on the new backup partition, and
an upgrade stages it in a directory of its own on the existing logs partition.
HTTP downloads resume with ``Range`` requests (a partial file is continued, not
restarted; a server that answers 200 instead of 206 restarts it); other schemes
are copied whole.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from answerfile.bootargs import redact_url
from common.errors import SourceError
from installer_core.context import InstallContext
from installer_core.fetch import (
    CHUNK,
    IDENTITY,
    Transport,
    check_status,
    fetch_file,
    fetch_text,
    with_retries,
)
from installer_core.treeinfo import TreeInfo, parse_treeinfo

log = logging.getLogger(__name__)

MiB = 1 << 20
RAM_MARGIN = 256 * MiB  # left free when the payload is staged in RAM
Progress = Callable[[int], None]  # percent of one file, reported at every ~10%


def join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path


def mem_available(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemAvailable from /proc/meminfo, in bytes."""
    for line in meminfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            return int(value.split()[0]) * 1024
    raise SourceError(f"{meminfo} has no MemAvailable line")


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


OnDisk = Callable[[InstallContext, int], Path]  # (ctx, bytes needed) -> staging directory


def _stage_on_disk(ctx: InstallContext, total: int) -> Path:
    from installer_core import disk  # noqa: PLC0415 - partitioning is not needed otherwise

    return disk.staging_on_disk(ctx, total)


def choose_staging(
    ctx: InstallContext,
    total: int,
    meminfo: Path = Path("/proc/meminfo"),
    on_disk: OnDisk = _stage_on_disk,
) -> Path:
    """RAM (``ctx.work/payload``) when the payload fits with 256 MiB to spare; else the
    disk (SPEC §7: the new layout's backup partition on a fresh install, the logs
    partition on an upgrade)."""
    available = mem_available(meminfo)
    if available > total + RAM_MARGIN:
        return ctx.work / "payload"
    log.warning(
        "the payload (%d MiB) does not fit in RAM (%d MiB available, %d MiB kept free): "
        "staging it on the disk",
        total // MiB,
        available // MiB,
        RAM_MARGIN // MiB,
    )
    return on_disk(ctx, total)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _http_attempt(url: str, dest: Path, io: Transport, progress: Progress) -> None:
    """One try: continue ``dest`` from its current size (206) or start over (200)."""
    have = dest.stat().st_size if dest.exists() else 0
    headers = {**IDENTITY, "Range": f"bytes={have}-"} if have else IDENTITY
    with io.session.get(url, headers=headers, stream=True, timeout=io.timeout) as response:
        if have and response.status_code == 416:
            return  # nothing left to fetch: the checksum decides
        check_status(response)
        if response.status_code == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                raise SourceError(f"the server resumed at {content_range!r}, not at byte {have}")
            mode = "ab"
        else:
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length", "")
        total = have + int(length) if length.isdigit() else None
        done = have
        with dest.open(mode) as out:
            for chunk in response.raw.stream(CHUNK, decode_content=False):
                out.write(chunk)
                done += len(chunk)
                if total:
                    progress(done * 100 // total)


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
        if http:
            with_retries(
                url,
                lambda: _http_attempt(url, dest, io, progress),
                retries=retries,
                backoff=backoff,
                transport=io,
            )
        else:
            fetch_file(url, dest, retries=retries, backoff=backoff, transport=io)
        got = sha256_of(dest)
        if got == expected:
            return
        if last_try:
            raise SourceError(f"sha256 mismatch for {name}: expected {expected}, got {got}")
        log.warning("%s does not verify after resuming: downloading it again", name)
        dest.unlink()


class _Percent:
    """Reports a file's progress at every 10% it crosses."""

    def __init__(self, ctx: InstallContext, name: str) -> None:
        self.ctx, self.name, self.next = ctx, name, 10

    def __call__(self, percent: int) -> None:
        if percent < self.next:
            return
        self.next = percent // 10 * 10 + 10
        log.info("download %s %d%%", self.name, percent)
        self.ctx.reporter.event("installing", step="download", message=f"{self.name} {percent}%")


def download_payload(
    ctx: InstallContext,
    transport: Transport | None = None,
    meminfo: Path = Path("/proc/meminfo"),
    on_disk: OnDisk = _stage_on_disk,
) -> None:
    """Step: read ``.treeinfo``, stage and verify every file it lists."""
    if ctx.repo_url is None:
        raise SourceError("no install repository is known (the answer file names no source)")
    io = transport or Transport()
    info: TreeInfo = parse_treeinfo(fetch_text(join(ctx.repo_url, ".treeinfo"), transport=io))
    log.info("payload %s (build %s): %d files", info.version, info.build, len(info.checksums))
    sizes = [remote_size(join(ctx.repo_url, name), io) for name in info.files()]
    if None in sizes:
        log.info("some payload sizes are unknown; the RAM check counts the known ones")
    staging = choose_staging(ctx, sum(size or 0 for size in sizes), meminfo, on_disk)
    for name in info.files():
        dest = staging / name
        download_file(
            join(ctx.repo_url, name),
            dest,
            info.checksums[name],
            name=name,
            io=io,
            progress=_Percent(ctx, name),
        )
        log.info("verified %s (sha256 %s)", name, info.checksums[name])
        ctx.payload[name] = dest
    ctx.staging, ctx.treeinfo, ctx.payload_version = staging, info, info.version
