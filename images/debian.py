"""Debian packages for the builders: the mirror, versions, downloads, chroots.

The mirror comes from this machine's apt sources (deb822 ``*.sources`` files or
``sources.list``), overridable. Packages are fetched with ``apt-get download``
into the cache and unpacked with ``dpkg-deb -x``, or installed inside a
debootstrap chroot: never on the build host (TESTING.md). Every command runs
through ``common.process.run``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.errors import CommandError, NetinstallError, SourceError
from common.process import Completed, run

SUITE = "bookworm"
SOURCES_DIR = Path("/etc/apt/sources.list.d")
SOURCES_LIST = Path("/etc/apt/sources.list")


@dataclass(frozen=True)
class Mirror:
    """The Debian archive and its security archive, as URIs."""

    archive: str
    security: str

    def sources_list(self) -> str:
        """An apt sources.list for bookworm, its updates and its security suite."""
        return (
            f"deb {self.archive} {SUITE} main\n"
            f"deb {self.archive} {SUITE}-updates main\n"
            f"deb {self.security} {SUITE}-security main\n"
        )


def _deb822_entries(text: str) -> Iterator[dict[str, str]]:
    for stanza in re.split(r"\n\s*\n", text):
        entry: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            entry[key.strip().lower()] = value.strip()
        if entry:
            yield entry


def _one_line_entries(text: str) -> Iterator[dict[str, str]]:
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            yield {"types": "deb", "uris": words[1], "suites": words[2]}


def discover_mirror(
    override: str | None = None,
    security_override: str | None = None,
    sources_dir: Path = SOURCES_DIR,
    sources_list: Path = SOURCES_LIST,
) -> Mirror:
    """The archive and security URIs this machine's apt uses for bookworm."""
    entries: list[dict[str, str]] = []
    if sources_dir.is_dir():
        for path in sorted(sources_dir.glob("*.sources")):
            entries.extend(_deb822_entries(path.read_text()))
        for path in sorted(sources_dir.glob("*.list")):
            entries.extend(_one_line_entries(path.read_text()))
    if sources_list.is_file():
        entries.extend(_one_line_entries(sources_list.read_text()))
    archive = override
    security = security_override
    for entry in entries:
        if "deb" not in entry.get("types", "deb").split():
            continue
        suites = entry.get("suites", "").split()
        uri = entry.get("uris", "").split()[0] if entry.get("uris") else None
        if uri is None:
            continue
        if archive is None and SUITE in suites:
            archive = uri.rstrip("/")
        if security is None and f"{SUITE}-security" in suites:
            security = uri.rstrip("/")
    if archive is None:
        raise NetinstallError(
            f"no apt source for Debian {SUITE} on this machine; pass --mirror URI"
        )
    if security is None:
        raise NetinstallError(
            f"no apt source for {SUITE}-security on this machine (needed for the 6.12 "
            "kernel and Xen updates); pass --security-mirror URI"
        )
    return Mirror(archive, security)


def candidate_versions(packages: Iterable[str]) -> dict[str, str]:
    """The version apt would install of each package (host lists, refreshed once if needed)."""
    names = sorted(set(packages))
    versions = _policy(names)
    if any(v is None for v in versions.values()):
        run(["apt-get", "update", "-qq"], timeout=600)
        versions = _policy(names)
    missing = sorted(name for name, version in versions.items() if version is None)
    if missing:
        raise SourceError(f"Debian has no installable version of: {', '.join(missing)}")
    return {name: str(version) for name, version in versions.items()}


def _policy(names: Sequence[str]) -> dict[str, str | None]:
    out = run(["apt-cache", "policy", *names]).stdout
    found: dict[str, str | None] = dict.fromkeys(names)
    current = None
    for line in out.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1]
        elif current in found and line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            found[current] = None if version == "(none)" else version
    return found


def download(package: str, version: str, cache: Path) -> Path:
    """The .deb of ``package`` at ``version``, from the cache or fetched into it."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    quoted = version.replace(":", "%3a")
    pattern = f"{package}_{quoted}_*.deb"
    found = sorted(debs.glob(pattern))
    if found:
        return found[0]
    try:
        run(["apt-get", "download", f"{package}={version}"], timeout=1800, cwd=debs)
    except CommandError as exc:
        raise SourceError(f"cannot download Debian package {package} {version}: {exc}") from exc
    found = sorted(debs.glob(pattern))
    if not found:
        raise SourceError(f"apt-get download {package}={version} left no .deb in {debs}")
    return found[0]


def extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    run(["dpkg-deb", "-x", str(deb), str(dest)], timeout=600)


_CHROOT_MOUNTS = (("proc", "proc", "proc"), ("sysfs", "sys", "sys"))


@contextmanager
def mounted(root: Path) -> Iterator[Path]:
    """/proc, /sys and /dev of a chroot, unmounted again whatever happens."""
    done: list[Path] = []
    try:
        for fstype, source, name in _CHROOT_MOUNTS:
            target = root / name
            target.mkdir(exist_ok=True)
            run(["mount", "-t", fstype, source, str(target)])
            done.append(target)
        dev = root / "dev"
        dev.mkdir(exist_ok=True)
        run(["mount", "--bind", "/dev", str(dev)])
        done.append(dev)
        yield root
    finally:
        for target in reversed(done):
            run(["umount", "--lazy", str(target)], ok_codes=(0, 32))


CHROOT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
    "LC_ALL": "C.UTF-8",
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
}


def in_chroot(root: Path, argv: Sequence[str], timeout: float = 1800) -> Completed:
    """Run ``argv`` inside the chroot (mounts must be up: see ``mounted``)."""
    return run(["chroot", str(root), *argv], timeout=timeout, env=CHROOT_ENV)


def prevent_service_starts(root: Path) -> None:
    """Packages installed in a chroot must not start services on the build host."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)


def allow_service_starts(root: Path) -> None:
    (root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)


def debootstrap(
    target: Path, mirror: Mirror, include: Sequence[str], variant: str | None = None
) -> None:
    """A bookworm root in ``target`` (emptied first)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    argv = ["debootstrap", "--merged-usr"]
    if variant:
        argv.append(f"--variant={variant}")
    if include:
        argv.append("--include=" + ",".join(include))
    argv += [SUITE, str(target), mirror.archive]
    try:
        run(argv, timeout=3600)
    except CommandError as exc:
        raise SourceError(f"debootstrap of {target.name} failed: {exc}") from exc


def apt_install(root: Path, mirror: Mirror, packages: Sequence[str]) -> None:
    """Install packages (bookworm, -updates and -security) inside a mounted chroot."""
    (root / "etc/apt/sources.list").write_text(mirror.sources_list())
    in_chroot(root, ["apt-get", "update", "-qq"], timeout=900)
    try:
        in_chroot(
            root,
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
            timeout=3600,
        )
    except CommandError as exc:
        raise SourceError(f"installing {', '.join(packages)} failed: {exc}") from exc
    in_chroot(root, ["apt-get", "clean"])


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            file = Path(dirpath) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def first_dependency(package: str, version: str) -> str:
    """The first package ``package`` (a metapackage) depends on, e.g. the real kernel."""
    out = run(["apt-cache", "show", f"{package}={version}"]).stdout
    for line in out.splitlines():
        if line.startswith("Depends:"):
            return line.split(":", 1)[1].split(",")[0].split("(")[0].strip()
    raise SourceError(f"{package} {version} depends on nothing; expected a metapackage")
