"""The installers' uploaded log bundles on disk (docs/protocol.md, "Log bundle").

Each host's bundles lie in ``<shared>/logs/<mac with dashes>/`` (``pxe_server.shared_dir``:
the shared directory, else the server directory), named by the UTC time they were
stored. The server's API stores them (``PUT .../logs``) and lists and serves them
(``GET .../logs``, ``.../logs/<name>``); ``netinstall host logs`` reads them here when it
runs on a server directory. No aiohttp here: the CLI imports this.

    log_dir(shared, mac)          -> the host's directory of bundles
    Bundle(directory)             -> one upload on its way in (write, commit, discard)
    prune_bundles(directory)      -> the quota applied; the files removed
    bundles(directory)            -> the stored bundles, oldest first
    bundle_file(shared, mac, name) -> the stored bundle of that name, else None
"""

from __future__ import annotations

import os
import re
import secrets
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from common.protocol.messages import LogBundle
from pxe_server.limits import LOG_BUNDLES_KEPT, LOG_BYTES_KEPT, STALE_PART
from pxe_server.model import mac_dashes, normalise_mac
from pxe_server.shared_dir import LOGS_DIR

# The name a stored bundle has (``Bundle``): its UTC time to the microsecond.
BUNDLE_NAME = re.compile(r"\d{8}T\d{6}\.\d{6}Z\.tar\.bz2")


def log_dir(shared: Path, mac: str) -> Path:
    """Where a host's uploaded log bundles go: ``<shared>/logs/<mac with dashes>/``, the
    shared directory's (``pxe_server.shared_dir``; without one, the server directory's)."""
    return shared / LOGS_DIR / mac_dashes(normalise_mac(mac))


def no_bundle(mac: str, name: str) -> str:
    """The sentence for a bundle name the host has none of (the API's 404, the CLI's)."""
    return f"host {mac} has no log bundle {name[:64]!r}"


class Bundle:
    """One upload on its way to ``DIR/logs/<mac>/``: a hidden ``.part`` file (0600, in a
    0700 directory) that becomes ``<UTC time>.tar.bz2`` by a rename once whole; any
    failure removes it. Its methods block (file I/O)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        for made in (directory.parent, directory):  # DIR/logs and DIR/logs/<mac>
            made.mkdir(mode=0o700, exist_ok=True)
            made.chmod(0o700)  # mkdir's mode passes through the umask; this does not
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        self.target = directory / f"{stamp}.tar.bz2"
        self.part = directory / f".{stamp}.{secrets.token_hex(4)}.part"
        fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> Path:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.part, self.target)
        prune_bundles(self.directory)
        return self.target

    def discard(self) -> None:
        self._file.close()
        self.part.unlink(missing_ok=True)


def prune_bundles(directory: Path) -> list[Path]:
    """Keep a host's newest ``LOG_BUNDLES_KEPT`` bundles, and of those only as many of the
    newest as fit in ``LOG_BYTES_KEPT`` (the newest always stays); remove the rest, and
    ``.part`` files untouched for ``STALE_PART`` seconds (an interrupted server's). The
    removed files, oldest first."""
    stored = sorted(directory.glob("*.tar.bz2"), key=lambda p: p.name, reverse=True)
    kept_bytes, removed = 0, []
    for index, bundle in enumerate(stored):
        size = bundle.stat().st_size
        if index and (index >= LOG_BUNDLES_KEPT or kept_bytes + size > LOG_BYTES_KEPT):
            removed.append(bundle)
        else:
            kept_bytes += size
    now = time.time()
    for part in directory.glob(".*.part"):
        with suppress(FileNotFoundError):  # another upload's, finished meanwhile
            if now - part.stat().st_mtime > STALE_PART:
                removed.append(part)
    for path in removed:
        path.unlink(missing_ok=True)
    return sorted(removed, key=lambda p: p.name)


def bundles(directory: Path) -> list[LogBundle]:
    """The stored bundles in a host's log directory, oldest first (none: no directory)."""
    found = []
    with suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if BUNDLE_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with suppress(FileNotFoundError):  # pruned meanwhile
                    info = entry.stat(follow_symlinks=False)
                    found.append(LogBundle(entry.name, info.st_size, info.st_mtime))
    return sorted(found, key=lambda b: b.name)


def bundle_file(shared: Path, mac: str, name: str) -> Path | None:
    """Host ``mac``'s stored bundle ``name`` (a name ``bundles`` lists: nothing else of
    the directory, and no path), else None."""
    path = log_dir(shared, mac) / name
    if not BUNDLE_NAME.fullmatch(name) or path.is_symlink() or not path.is_file():
        return None
    return path
