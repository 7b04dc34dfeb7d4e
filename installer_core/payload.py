"""Lay the payload down (SPEC §7, §8): dom0 root, Xen + kernel + initrd, supplemental packs.

Packs use the XenServer layout that ``hypervisor_payload/packs.py`` builds (that
package is not in the installer image; the few lines read here are read
again): ``XS-REPOSITORY-LIST`` names pack directories, each with
``XS-REPOSITORY`` (its name) and ``XS-PACKAGES`` (its files in order, each with
size and sha256). Debs go in with ``dpkg -i`` in the target, tarballs are
unpacked at their ``root``, and ``script`` files run in the target after the
pack's other files, with ``NETINSTALL_PACK=<name>``.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lxml import etree

from common.errors import NetinstallError, SourceError
from common.process import CommandRunner, run, run_pipeline
from installer_core.mounts import chroot_env, chroot_mounts
from installer_core.plan import PackSource

log = logging.getLogger(__name__)

ROOTFS_KEY = "dom0-rootfs.tar.zst"
BOOT_FILES = {"boot/xen.gz": "xen.gz", "boot/vmlinuz": "vmlinuz", "boot/initrd.img": "initrd.img"}
REPOSITORY_LIST = "XS-REPOSITORY-LIST"
IN_TARGET = PurePosixPath("/tmp/netinstall-packs")  # noqa: S108 - inside the new root
_COMPRESSION = {".zst": "--zstd", ".gz": "--gzip", ".xz": "--xz", ".bz2": "--bzip2"}


def rootfs_archive(payload: Mapping[str, Path]) -> Path:
    """The dom0 root archive among the downloaded payload files."""
    if ROOTFS_KEY in payload:
        return payload[ROOTFS_KEY]
    archives = [path for key, path in payload.items() if ".tar" in PurePosixPath(key).name]
    if len(archives) != 1:
        raise NetinstallError(f"the payload has no single dom0 root archive ({sorted(payload)})")
    return archives[0]


# extract-root of a zstd archive: zstd and tar as two processes joined by a pipe of
# PIPE_BYTES (Linux's default pipe-max-size; the default pipe is 64 KiB), tar reading it in
# records of RECORD_BLOCKS x 512 B = 1 MiB (its default is 10 KiB). Each time the pipe
# fills or empties, one process sleeps and the other is woken: the larger both are, the
# fewer of those switches (and system calls) per byte.
PIPE_BYTES = 1 << 20
RECORD_BLOCKS = 2048
EXTRACT_TIMEOUT = 3600  # seconds, the whole extraction


def extract_command(archive: Path | None, target: Path) -> list[str]:
    """GNU tar keeping owners by number, modes, ACLs and every extended attribute; the
    archive from standard input in 1 MiB records when ``archive`` is None."""
    compression = _COMPRESSION.get(archive.suffix) if archive is not None else None
    return [
        "tar",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "--numeric-owner",
        *([compression] if compression else []),
        *(["-b", str(RECORD_BLOCKS)] if archive is None else []),
        "-xpf",
        "-" if archive is None else str(archive),
        "-C",
        str(target),
    ]


def decompress_command(archive: Path) -> list[str]:
    return ["zstd", "-q", "-d", "-c", "--no-progress", str(archive)]


def extract_root(files: Mapping[str, Path], target: Path, runner: CommandRunner = run) -> None:
    """Step: the dom0 root archive unpacked onto the mounted target (a zstd archive through
    ``run_pipeline``, others by tar's own decompressor)."""
    archive = rootfs_archive(files)
    log.info("extracting %s into %s", archive.name, target)
    if archive.suffix != ".zst":
        runner(extract_command(archive, target), timeout=EXTRACT_TIMEOUT)
        return
    run_pipeline(
        decompress_command(archive),
        extract_command(None, target),
        pipe_bytes=PIPE_BYTES,
        timeout=EXTRACT_TIMEOUT,
    )


def install_boot_files(files: Mapping[str, Path], target: Path) -> None:
    """Step: the payload's verified Xen, kernel and initrd, over whatever the archive had."""
    boot = target / "boot"
    boot.mkdir(parents=True, exist_ok=True)
    for key, name in BOOT_FILES.items():
        source = files.get(key)
        if source is None:
            raise NetinstallError(f"the payload has no {key}")
        destination = boot / name
        destination.unlink(missing_ok=True)  # the archive's may be a symlink
        shutil.copyfile(source, destination)
        destination.chmod(0o644)
        if destination.stat().st_size != source.stat().st_size:
            raise NetinstallError(f"copying {key} to {destination} came out short")
        log.info("installed %s as /boot/%s", key, name)


# --- supplemental packs ------------------------------------------------------


@dataclass(frozen=True)
class PackFile:
    type: str  # deb, tar or script
    file: str
    size: int
    sha256: str
    root: str = "/"


@dataclass(frozen=True)
class Pack:
    url: str  # the pack directory, ending in "/"
    name: str
    files: tuple[PackFile, ...]


@dataclass(frozen=True)
class Fetcher:
    """How packs are read: installer_core.fetch's functions, or a test's fakes."""

    read: Callable[[str], bytes]
    save: Callable[[str, Path], None]


def default_fetcher() -> Fetcher:
    from installer_core import fetch  # noqa: PLC0415 - needs requests; only here

    return Fetcher(read=fetch.fetch_bytes, save=fetch.fetch_file)


def pack_list(text: str) -> list[str]:
    """The directories an ``XS-REPOSITORY-LIST`` names (blank lines and comments skipped)."""
    found = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        path = PurePosixPath(line)
        if path.is_absolute() or ".." in path.parts:
            raise SourceError(f"{REPOSITORY_LIST}: {line!r} is not a directory of the repository")
        found.append(str(path))
    return found


def _xml(data: bytes, what: str) -> etree._Element:
    try:
        return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise SourceError(f"{what} is not well-formed XML: {exc}") from exc


def parse_pack(url: str, repository_xml: bytes, packages_xml: bytes) -> Pack:
    """A pack from its two metadata files; every file name a plain name in the pack."""
    name = _xml(repository_xml, f"{url}XS-REPOSITORY").get("name")
    if not name:
        raise SourceError(f"{url}XS-REPOSITORY names no pack")
    files = []
    for element in _xml(packages_xml, f"{url}XS-PACKAGES").iter("package"):
        file = (element.text or "").strip()
        kind, size, digest = element.get("type"), element.get("size"), element.get("sha256")
        if "/" in file or file in ("", ".", "..") or kind not in ("deb", "tar", "script"):
            raise SourceError(f"{url}XS-PACKAGES: cannot use <package> {file!r} ({kind})")
        if not size or not size.isdigit() or not digest:
            raise SourceError(f"{url}XS-PACKAGES: {file} needs size= and sha256=")
        files.append(PackFile(kind, file, int(size), digest.lower(), element.get("root", "/")))
    return Pack(url, name, tuple(files))


def _missing(exc: SourceError) -> bool:
    return type(exc.__cause__).__name__ == "Permanent"  # fetch's 404 / no such file


def packs_at(base: str, fetcher: Fetcher, *, optional_list: bool) -> list[Pack]:
    """The packs a repository lists; a source without a list is itself one pack."""
    try:
        listing = fetcher.read(base + REPOSITORY_LIST).decode("utf-8")
    except SourceError as exc:
        if not _missing(exc):
            raise
        if optional_list:
            log.info("%s has no %s: no supplemental packs", base, REPOSITORY_LIST)
            return []
        listing = "."
    packs = []
    for directory in pack_list(listing):
        url = base if directory == "." else f"{base}{directory.rstrip('/')}/"
        packs.append(
            parse_pack(url, fetcher.read(url + "XS-REPOSITORY"), fetcher.read(url + "XS-PACKAGES"))
        )
    return packs


def _verify(path: Path, entry: PackFile, pack: Pack) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if path.stat().st_size != entry.size or digest != entry.sha256:
        raise SourceError(f"pack {pack.name}: {entry.file} does not match its size and sha256")


def apply_pack(pack: Pack, target: Path, fetcher: Fetcher, runner: CommandRunner) -> None:
    """Download, verify and apply one pack: debs and tarballs in order, then its scripts."""
    staging = target / IN_TARGET.relative_to("/") / pack.name
    staging.mkdir(parents=True, exist_ok=True)
    for entry in pack.files:
        fetcher.save(pack.url + entry.file, staging / entry.file)
        _verify(staging / entry.file, entry, pack)
    ordered = [f for f in pack.files if f.type != "script"] + [
        f for f in pack.files if f.type == "script"
    ]
    env = chroot_env(NETINSTALL_PACK=pack.name, DEBIAN_FRONTEND="noninteractive")
    inside = IN_TARGET / pack.name
    with chroot_mounts(runner, target):
        for entry in ordered:
            log.info("pack %s: %s %s", pack.name, entry.type, entry.file)
            if entry.type == "deb":
                argv = ["chroot", str(target), "dpkg", "-i", str(inside / entry.file)]
            elif entry.type == "tar":
                where = target / PurePosixPath(entry.root).relative_to("/")
                where.mkdir(parents=True, exist_ok=True)
                argv = [
                    "tar",
                    "--numeric-owner",
                    "-xpf",
                    str(staging / entry.file),
                    "-C",
                    str(where),
                ]
            else:
                (staging / entry.file).chmod(0o755)
                argv = ["chroot", str(target), str(inside / entry.file)]
            runner(argv, timeout=3600, env=env)
    shutil.rmtree(staging)


def install_packs(
    sources: Sequence[PackSource],
    target: Path,
    runner: CommandRunner = run,
    fetcher: Fetcher | None = None,
) -> None:
    """Step: the repository's packs, then each driver source's, in answer-file order."""
    fetcher = fetcher or default_fetcher()
    packs: list[Pack] = []
    for source in sources:
        packs += packs_at(source.url, fetcher, optional_list=source.optional_list)
    if not packs:
        return
    no_services = target / "usr/sbin/policy-rc.d"  # no daemon starts inside the target
    no_services.parent.mkdir(parents=True, exist_ok=True)
    no_services.write_text("#!/bin/sh\nexit 101\n")
    no_services.chmod(0o755)
    try:
        for pack in packs:
            apply_pack(pack, target, fetcher, runner)
    finally:
        no_services.unlink(missing_ok=True)
        shutil.rmtree(target / IN_TARGET.relative_to("/"), ignore_errors=True)
    log.info("supplemental packs installed: %s", ", ".join(p.name for p in packs))
