"""The installer's reader of a repository's ``.treeinfo`` (SPEC §8).

The format is written by the payload builder (``hypervisor_payload.treeinfo``,
which is not in the installer image): an INI file with ``[general]`` (product,
version, build, arch), ``[images-xen]`` (kernel, initrd, xen), ``[rootfs]``
(archive, compression, optionally the same boot files inside the dom0 root) and
``[checksums]`` (``path = sha256:<64 hex>`` for every repository file).
Every problem is a ``SourceError`` naming the section and key.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from common.errors import SourceError

PRODUCT = "netinstall"
_SHA256 = re.compile(r"sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class TreeInfo:
    """What the installer needs from ``.treeinfo``; paths are relative to the repository."""

    version: str
    build: str
    xen: str
    kernel: str
    initrd: str
    archive: str  # the dom0 root filesystem as a tar archive
    compression: str  # zstd, gzip, xz or none
    checksums: Mapping[str, str]  # path -> sha256 hex digest
    root_xen: str | None = None  # the same boot files inside the dom0 root, when named
    root_kernel: str | None = None
    root_initrd: str | None = None

    def files(self) -> tuple[str, ...]:
        """Every file to download: Xen, kernel, initrd, the root archive, then the rest."""
        first = (self.xen, self.kernel, self.initrd, self.archive)
        return (*first, *sorted(set(self.checksums) - set(first)))


def _plain_path(where: str, value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or str(path) != value:
        raise SourceError(f".treeinfo {where}={value}: expected a plain path inside the repository")
    return value


def parse_treeinfo(text: str) -> TreeInfo:
    """Read ``.treeinfo`` text; every boot file and the archive must have a checksum."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # paths keep their case
    try:
        parser.read_string(text, source=".treeinfo")
    except configparser.Error as exc:
        raise SourceError(f".treeinfo is not a valid INI file: {exc}") from exc

    def get(section: str, key: str, *, required: bool = True) -> str | None:
        value = parser.get(section, key, fallback="").strip()
        if not value and required:
            raise SourceError(f".treeinfo [{section}] has no {key}=")
        return value or None

    def need(section: str, key: str) -> str:
        return str(get(section, key))

    product = need("general", "product")
    if product != PRODUCT:
        raise SourceError(f".treeinfo [general] product={product}: expected {PRODUCT}")
    if not parser.has_section("checksums"):
        raise SourceError(".treeinfo has no [checksums] section")
    checksums: dict[str, str] = {}
    for path, value in parser.items("checksums"):
        match = _SHA256.fullmatch(value.strip())
        if match is None:
            raise SourceError(f".treeinfo [checksums] {path}: expected sha256:<64 lowercase hex>")
        checksums[_plain_path("[checksums]", path)] = match[1]
    info = TreeInfo(
        version=need("general", "version"),
        build=need("general", "build"),
        xen=_plain_path("[images-xen] xen", need("images-xen", "xen")),
        kernel=_plain_path("[images-xen] kernel", need("images-xen", "kernel")),
        initrd=_plain_path("[images-xen] initrd", need("images-xen", "initrd")),
        archive=_plain_path("[rootfs] archive", need("rootfs", "archive")),
        compression=need("rootfs", "compression"),
        checksums=checksums,
        root_xen=get("rootfs", "xen", required=False),
        root_kernel=get("rootfs", "kernel", required=False),
        root_initrd=get("rootfs", "initrd", required=False),
    )
    for path in (info.xen, info.kernel, info.initrd, info.archive):
        if path not in checksums:
            raise SourceError(f".treeinfo names {path} but [checksums] does not list it")
    return info
