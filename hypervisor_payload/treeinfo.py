"""The repository's ``.treeinfo``: what the installer reads first (SPEC §8).

An INI file written in a fixed order, so the same inputs give the same bytes::

    [general]
    product = netinstall
    version = 0.1.0             # the payload version (BuildContext.payload_version)
    build = 3f2a9c01b7d4        # short hash of the dom0 package versions
    arch = x86_64

    [images-xen]                # what boots: paths relative to the repository
    kernel = boot/vmlinuz
    initrd = boot/initrd.img
    xen = boot/xen.gz

    [rootfs]
    archive = dom0-rootfs.tar.zst
    compression = zstd
    kernel = /boot/vmlinuz-6.12.57+deb12-amd64     # optional: the same files
    initrd = /boot/initrd.img-6.12.57+deb12-amd64  # as they lie inside the
    xen = /boot/xen-4.17-amd64.gz                  # dom0 root

    [checksums]                 # every file of the repository but .treeinfo
    boot/initrd.img = sha256:<64 hex>              # and SHA256SUMS
    ...

``parse_treeinfo`` reads it back into a ``TreeInfo`` and raises ``TreeInfoError``
naming the section and key of the first problem.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from common.errors import SourceError

TREEINFO = ".treeinfo"
PRODUCT = "netinstall"
ARCH = "x86_64"
COMPRESSIONS = ("zstd", "gzip", "xz", "none")

_CHECKSUM = re.compile(r"sha256:([0-9a-f]{64})")


class TreeInfoError(SourceError):
    """A ``.treeinfo`` that cannot be used; the message names section and key."""


@dataclass(frozen=True)
class TreeInfo:
    """The parsed ``.treeinfo``. Paths are relative to the repository root."""

    version: str
    build: str
    kernel: str
    initrd: str
    xen: str
    archive: str
    compression: str
    checksums: Mapping[str, str]  # path -> sha256 hex digest
    product: str = PRODUCT
    arch: str = ARCH
    root_kernel: str | None = None  # the kernel, initrd and Xen inside the dom0 root
    root_initrd: str | None = None
    root_xen: str | None = None

    def sha256(self, path: str) -> str:
        """The expected digest of ``path``; ``TreeInfoError`` when it is not listed."""
        try:
            return self.checksums[path]
        except KeyError:
            raise TreeInfoError(f".treeinfo [checksums] does not list {path}") from None

    def payload_files(self) -> tuple[str, ...]:
        """Every file the installer downloads: boot files first, then the rest."""
        first = (self.xen, self.kernel, self.initrd, self.archive)
        rest = sorted(set(self.checksums) - set(first))
        return (*first, *rest)


def render_treeinfo(info: TreeInfo) -> str:
    """The text of ``.treeinfo``: sections and keys in a fixed order."""
    lines = [
        "[general]",
        f"product = {info.product}",
        f"version = {info.version}",
        f"build = {info.build}",
        f"arch = {info.arch}",
        "",
        "[images-xen]",
        f"kernel = {info.kernel}",
        f"initrd = {info.initrd}",
        f"xen = {info.xen}",
        "",
        "[rootfs]",
        f"archive = {info.archive}",
        f"compression = {info.compression}",
    ]
    for key, value in (
        ("kernel", info.root_kernel),
        ("initrd", info.root_initrd),
        ("xen", info.root_xen),
    ):
        if value is not None:
            lines.append(f"{key} = {value}")
    lines += ["", "[checksums]"]
    lines += [f"{path} = sha256:{digest}" for path, digest in sorted(info.checksums.items())]
    return "\n".join(lines) + "\n"


def _parser() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep path case
    return parser


def _get(parser: configparser.ConfigParser, section: str, key: str) -> str:
    if not parser.has_section(section):
        raise TreeInfoError(f".treeinfo has no [{section}] section")
    value = parser.get(section, key, fallback=None)
    if value is None or not value.strip():
        raise TreeInfoError(f".treeinfo [{section}] has no {key}=")
    return value.strip()


def _optional(parser: configparser.ConfigParser, section: str, key: str) -> str | None:
    value = parser.get(section, key, fallback=None)
    return value.strip() if value and value.strip() else None


def _relative_path(section: str, key: str, value: str) -> str:
    """A repository path: relative, no ``..``; the error names where it came from."""
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or value != str(path):
        raise TreeInfoError(
            f".treeinfo [{section}] {key}={value}: expected a plain path inside the repository"
        )
    return value


def _checksums(parser: configparser.ConfigParser) -> dict[str, str]:
    if not parser.has_section("checksums"):
        raise TreeInfoError(".treeinfo has no [checksums] section")
    found: dict[str, str] = {}
    for path, value in parser.items("checksums"):
        match = _CHECKSUM.fullmatch(value.strip())
        if match is None:
            raise TreeInfoError(
                f".treeinfo [checksums] {path}={value.strip()}: expected sha256:<64 lowercase hex>"
            )
        found[_relative_path("checksums", path, path)] = match.group(1)
    return found


def parse_treeinfo(text: str) -> TreeInfo:
    """Parse ``.treeinfo`` text; every file it names must have a checksum."""
    parser = _parser()
    try:
        parser.read_string(text, source=TREEINFO)
    except configparser.Error as exc:
        raise TreeInfoError(f".treeinfo is not a valid INI file: {exc}") from exc
    product = _get(parser, "general", "product")
    if product != PRODUCT:
        raise TreeInfoError(f".treeinfo [general] product={product}: expected {PRODUCT}")
    arch = _get(parser, "general", "arch")
    if arch != ARCH:
        raise TreeInfoError(f".treeinfo [general] arch={arch}: expected {ARCH}")
    compression = _get(parser, "rootfs", "compression")
    if compression not in COMPRESSIONS:
        raise TreeInfoError(
            f".treeinfo [rootfs] compression={compression}: expected one of "
            + ", ".join(COMPRESSIONS)
        )
    info = TreeInfo(
        product=product,
        version=_get(parser, "general", "version"),
        build=_get(parser, "general", "build"),
        arch=arch,
        kernel=_relative_path("images-xen", "kernel", _get(parser, "images-xen", "kernel")),
        initrd=_relative_path("images-xen", "initrd", _get(parser, "images-xen", "initrd")),
        xen=_relative_path("images-xen", "xen", _get(parser, "images-xen", "xen")),
        archive=_relative_path("rootfs", "archive", _get(parser, "rootfs", "archive")),
        compression=compression,
        root_kernel=_optional(parser, "rootfs", "kernel"),
        root_initrd=_optional(parser, "rootfs", "initrd"),
        root_xen=_optional(parser, "rootfs", "xen"),
        checksums=_checksums(parser),
    )
    for section, key, path in (
        ("images-xen", "kernel", info.kernel),
        ("images-xen", "initrd", info.initrd),
        ("images-xen", "xen", info.xen),
        ("rootfs", "archive", info.archive),
    ):
        if path not in info.checksums:
            raise TreeInfoError(f".treeinfo [{section}] {key}={path} has no entry in [checksums]")
    return info
