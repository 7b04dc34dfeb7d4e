"""sha256 digests of repository files and the ``SHA256SUMS`` file (``sha256sum -c`` format)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from pathlib import Path

from common.errors import SourceError

SHA256SUMS = "SHA256SUMS"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def repository_files(root: Path, exclude: Collection[str] = ()) -> list[str]:
    """Every regular file under ``root`` as a sorted POSIX relative path, minus ``exclude``."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            relative = path.relative_to(root).as_posix()
            if relative not in exclude:
                found.append(relative)
    return sorted(found)


def digests(root: Path, files: Collection[str]) -> dict[str, str]:
    """``{relative path: sha256}`` of ``files`` under ``root``."""
    return {name: sha256_file(root / name) for name in sorted(files)}


def render_sha256sums(found: Mapping[str, str]) -> str:
    """``<hex>  <path>`` lines sorted by path, as ``sha256sum`` writes them."""
    for name in found:
        if "\n" in name or "\\" in name:
            raise ValueError(f"file name not representable in SHA256SUMS: {name!r}")
    return "".join(f"{found[name]}  {name}\n" for name in sorted(found))


def parse_sha256sums(text: str) -> dict[str, str]:
    """``{path: sha256}`` from ``SHA256SUMS`` text (text or binary mode markers)."""
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, name = line.partition(" ")
        if not sep or len(digest) != 64 or name[:1] not in (" ", "*") or len(name) < 2:
            raise SourceError(f"SHA256SUMS line {number}: expected '<sha256>  <path>'")
        try:
            int(digest, 16)
        except ValueError:
            raise SourceError(f"SHA256SUMS line {number}: {digest!r} is not hex") from None
        found[name[1:]] = digest.lower()
    return found
