"""Update bundles: hotfixes for running hosts (README "Updates", seed 000 ch. 8).

A bundle is one uncompressed POSIX tar file, read by the server (``update add``) and by
the dom0 agent (which applies it), so it is declared here with the standard library
alone. Its members, in this order:

``update.json``
    The metadata, UTF-8 JSON of at most ``MAX_METADATA`` bytes::

        {"format": 1, "id": "example-1", "name": "...", "version": "1.0-hotfix1",
         "applies_to": ["1.0"], "reboot": false,
         "members": [{"path": "debs/tool_1.1_all.deb", "type": "deb",
                      "size": 1234, "sha256": "..."}, ...]}

    ``id`` is the update's stable name (a host records it once applied), ``version``
    the version string the update sets (the agent writes it to
    ``/etc/netinstall-updates/<id>``), ``applies_to`` the payload versions a host may
    run to take it, ``reboot`` whether the host reboots after it.
``update.json.sig``
    The server's SSH signature (Ed25519, namespace ``SIGNATURE_NAMESPACE``) of
    ``update.json``, added by ``update add``; a bundle from ``update build`` has none.
    Since ``update.json`` holds every member's sha256, the signature covers them all.
``debs/<file>.deb``
    Debian packages, installed with ``dpkg -i`` (all in one call).
``root.tar``
    Files and symlinks (no directories, no ``..``, nothing absolute) written at ``/``.
``post-apply.sh``
    Run after the packages and the files; a non-zero exit fails the update.

Every member is bounded (``MAX_MEMBER_BYTES``, ``MAX_BUNDLE_BYTES``, ``MAX_MEMBERS``,
``MAX_ROOT_ENTRIES``), and a bundle that breaks any rule is one ``UpdateError``: one
sentence, nothing applied.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from common.errors import InputError

FORMAT = 1
METADATA = "update.json"
SIGNATURE = "update.json.sig"
ROOT_TAR = "root.tar"
SCRIPT = "post-apply.sh"
DEBS_DIR = "debs"
SIGNATURE_NAMESPACE = "netinstall-update"  # what an update signature is for (ssh-keygen -n)
SIGNER = "netinstall-updates"  # the principal of dom0's allowed-signers file (ssh-keygen -I)
TYPES = ("deb", "tar", "script")

MAX_METADATA = 64 * 1024  # bytes of update.json
MAX_SIGNATURE = 4096  # bytes of update.json.sig
MAX_MEMBERS = 256  # members listed in update.json
MAX_MEMBER_BYTES = 1 << 30  # bytes of one member
MAX_BUNDLE_BYTES = 2 << 30  # bytes of a whole bundle
MAX_ROOT_ENTRIES = 10000  # files and symlinks of root.tar
MAX_APPLIES_TO = 64  # payload versions an update names
MAX_WORD = 128  # characters of a name, a version, an id

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~_:-]*")
_DEB = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_~-]*\.deb")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
# Every generated file's time (packs' too): builds repeat byte for byte.
BUNDLE_MTIME = 1686355200


class UpdateError(InputError):
    """A bundle (or its source) that cannot be used: one sentence; nothing was applied."""


@dataclass(frozen=True)
class Member:
    path: str  # inside the bundle: debs/<file>.deb, root.tar or post-apply.sh
    type: str  # deb, tar or script
    size: int
    sha256: str


@dataclass(frozen=True)
class UpdateMeta:
    id: str
    name: str
    version: str
    applies_to: tuple[str, ...]
    reboot: bool
    members: tuple[Member, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "applies_to": list(self.applies_to),
            "reboot": self.reboot,
            "members": [
                {"path": m.path, "type": m.type, "size": m.size, "sha256": m.sha256}
                for m in self.members
            ],
        }

    def encoded(self) -> bytes:
        """``update.json`` as written: sorted keys, so that a build repeats byte for byte."""
        return (json.dumps(self.as_json(), sort_keys=True, indent=1) + "\n").encode("utf-8")

    @property
    def total_bytes(self) -> int:
        return sum(m.size for m in self.members)


def member_type(path: str) -> str | None:
    """The type of a member at ``path`` (None: no member may be there)."""
    if path == ROOT_TAR:
        return "tar"
    if path == SCRIPT:
        return "script"
    parts = PurePosixPath(path).parts
    if len(parts) == 2 and parts[0] == DEBS_DIR and _DEB.fullmatch(parts[1]):
        return "deb"
    return None


def check_id(value: object, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise UpdateError(
            f"{what} {str(value)[:MAX_WORD]!r} is not an update id (1 to 64 of a-z, 0-9, "
            "'.', '_' or '-', starting with a letter or digit)"
        )
    return value


def _text(data: Mapping[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_WORD:
        raise UpdateError(f"{METADATA}: {key} must be a text of 1 to {MAX_WORD} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise UpdateError(f"{METADATA}: {key} {value!r} is not a version (no spaces)")
    if not value.isprintable():
        raise UpdateError(f"{METADATA}: {key} holds characters that are not printable")
    return value


def _member(item: object, index: int) -> Member:
    where = f"{METADATA}: member {index + 1}"
    if not isinstance(item, dict) or set(item) != {"path", "type", "size", "sha256"}:
        raise UpdateError(f"{where} must be an object with path, type, size and sha256")
    path, kind, size, digest = item["path"], item["type"], item["size"], item["sha256"]
    if not isinstance(path, str) or member_type(path) is None:
        raise UpdateError(
            f"{where}: {str(path)[:MAX_WORD]!r} is not a member path (debs/<file>.deb, "
            f"{ROOT_TAR} or {SCRIPT})"
        )
    if kind != member_type(path):
        raise UpdateError(f"{where}: {path} has type {kind!r}, not {member_type(path)}")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_MEMBER_BYTES:
        raise UpdateError(f"{where}: size must be 0 to {MAX_MEMBER_BYTES} bytes")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise UpdateError(f"{where}: sha256 must be 64 lowercase hex digits")
    return Member(path, kind, size, digest)


def parse_metadata(data: bytes) -> UpdateMeta:
    """``update.json``'s bytes as UpdateMeta; UpdateError, one sentence, for any fault."""
    if len(data) > MAX_METADATA:
        raise UpdateError(f"{METADATA} has more than {MAX_METADATA} bytes")
    try:
        found = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UpdateError(f"{METADATA} is not JSON: {exc}") from None
    if not isinstance(found, dict):
        raise UpdateError(f"{METADATA} must hold a JSON object")
    known = {"format", "id", "name", "version", "applies_to", "reboot", "members"}
    unknown = sorted(set(found) - known)
    if unknown:
        raise UpdateError(f"{METADATA}: unknown keys {', '.join(unknown)[:200]}")
    if found.get("format") != FORMAT:
        raise UpdateError(f"{METADATA}: format {found.get('format')!r} is not {FORMAT}")
    applies = found.get("applies_to")
    if not isinstance(applies, list) or not 0 < len(applies) <= MAX_APPLIES_TO:
        raise UpdateError(f"{METADATA}: applies_to must list 1 to {MAX_APPLIES_TO} versions")
    versions = tuple(_text({"applies_to": v}, "applies_to", _VERSION) for v in applies)
    if not isinstance(found.get("reboot"), bool):
        raise UpdateError(f"{METADATA}: reboot must be true or false")
    members = found.get("members")
    if not isinstance(members, list) or not 0 < len(members) <= MAX_MEMBERS:
        raise UpdateError(f"{METADATA}: members must list 1 to {MAX_MEMBERS} files")
    parsed = tuple(_member(item, i) for i, item in enumerate(members))
    if len({m.path for m in parsed}) != len(parsed):
        raise UpdateError(f"{METADATA}: a member is listed twice")
    meta = UpdateMeta(
        id=check_id(found.get("id"), f"{METADATA}: id"),
        name=_text(found, "name"),
        version=_text(found, "version", _VERSION),
        applies_to=versions,
        reboot=found["reboot"],
        members=parsed,
    )
    if meta.total_bytes > MAX_BUNDLE_BYTES:
        raise UpdateError(f"the update's members have more than {MAX_BUNDLE_BYTES} bytes")
    return meta


# -- reading a bundle ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A bundle's parts as read (the members checked against the metadata)."""

    path: Path
    meta: UpdateMeta
    metadata: bytes  # update.json as it is in the bundle: what the signature covers
    signature: bytes | None  # update.json.sig; None for an unsigned bundle


def _read_small(archive: tarfile.TarFile, info: tarfile.TarInfo, limit: int) -> bytes:
    if info.size > limit:
        raise UpdateError(f"{info.name} has more than {limit} bytes")
    stream = archive.extractfile(info)
    if stream is None:
        raise UpdateError(f"{info.name} is not a regular file")
    return stream.read(limit + 1)


def file_sha256(path: Path) -> str:
    """The hex sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _digest(stream: IO[bytes], size: int) -> str:
    digest = hashlib.sha256()
    left = size
    while left > 0:
        chunk = stream.read(min(_CHUNK, left))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


def read_bundle(path: Path, *, check_members: bool = True) -> Bundle:
    """The bundle at ``path``: its metadata parsed, every member a regular file that the
    metadata lists (size and, with ``check_members``, sha256). UpdateError, one sentence,
    for the first fault; an unreadable file is an UpdateError too."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UpdateError(f"cannot read {path}: {exc.strerror}") from None
    if size > MAX_BUNDLE_BYTES + MAX_METADATA + (MAX_MEMBERS + 8) * 1024:
        raise UpdateError(f"{path} has more than {MAX_BUNDLE_BYTES} bytes: not an update bundle")
    try:
        with tarfile.open(path, "r:") as archive:
            return _read(archive, path, check_members)
    except (tarfile.TarError, EOFError) as exc:
        raise UpdateError(f"{path} is not an update bundle (a tar file): {exc}") from None
    except OSError as exc:
        raise UpdateError(f"cannot read {path}: {exc.strerror}") from None


def _read(archive: tarfile.TarFile, path: Path, check_members: bool) -> Bundle:
    infos: dict[str, tarfile.TarInfo] = {}
    for count, info in enumerate(archive, start=1):
        if count > MAX_MEMBERS + 2:
            raise UpdateError(f"{path} has more than {MAX_MEMBERS + 2} members")
        if not info.isfile():
            raise UpdateError(f"{path}: {info.name[:MAX_WORD]!r} is not a regular file")
        name = info.name
        if name in infos:
            raise UpdateError(f"{path}: {name[:MAX_WORD]!r} is in the bundle twice")
        if name not in (METADATA, SIGNATURE) and member_type(name) is None:
            raise UpdateError(f"{path}: {name[:MAX_WORD]!r} has no place in an update bundle")
        infos[name] = info
    if METADATA not in infos:
        raise UpdateError(f"{path} has no {METADATA}: not an update bundle")
    metadata = _read_small(archive, infos[METADATA], MAX_METADATA)
    meta = parse_metadata(metadata)
    signature = None
    if SIGNATURE in infos:
        signature = _read_small(archive, infos[SIGNATURE], MAX_SIGNATURE)
    listed = {m.path for m in meta.members}
    extra = sorted(set(infos) - listed - {METADATA, SIGNATURE})
    if extra:
        raise UpdateError(f"{path}: {extra[0]} is in the bundle but not in {METADATA}")
    for member in meta.members:
        found = infos.get(member.path)
        if found is None:
            raise UpdateError(f"{path}: {member.path} is missing")
        if found.size != member.size:
            raise UpdateError(f"{path}: {member.path} has {found.size} bytes, not {member.size}")
        if check_members:
            stream = archive.extractfile(found)
            if stream is None or _digest(stream, found.size) != member.sha256:
                raise UpdateError(f"{path}: sha256 mismatch for {member.path}")
    return Bundle(path, meta, metadata, signature)


def extract(bundle: Bundle, into: Path) -> dict[str, Path]:
    """Every member of ``bundle`` written under ``into`` (an empty directory), each checked
    against its sha256 as it is written; member path -> file. UpdateError on a mismatch."""
    written: dict[str, Path] = {}
    sums = {m.path: m for m in bundle.meta.members}
    with tarfile.open(bundle.path, "r:") as archive:
        for info in archive:
            member = sums.get(info.name)
            if member is None:
                continue
            stream = archive.extractfile(info)
            if stream is None:
                raise UpdateError(f"{bundle.path}: {info.name} is not a regular file")
            target = into / member.path
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with target.open("wb") as out:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != member.sha256 or target.stat().st_size != member.size:
                raise UpdateError(f"{bundle.path}: sha256 mismatch for {member.path}")
            written[member.path] = target
    missing = sorted(set(sums) - set(written))
    if missing:
        raise UpdateError(f"{bundle.path}: {missing[0]} is missing")
    return written


# -- root.tar -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RootEntry:
    path: str  # relative, normalised: etc/netinstall-updates/x
    mode: int
    link: str | None  # a symlink's target; None for a file


def root_entries(archive: tarfile.TarFile, where: str) -> list[tuple[RootEntry, tarfile.TarInfo]]:
    """``root.tar``'s entries, each a file or a symlink at a relative path without ``..``;
    UpdateError naming the first that is not."""
    found: list[tuple[RootEntry, tarfile.TarInfo]] = []
    seen: set[str] = set()
    for count, info in enumerate(archive, start=1):
        if count > MAX_ROOT_ENTRIES:
            raise UpdateError(f"{where} has more than {MAX_ROOT_ENTRIES} entries")
        name = info.name
        parts = PurePosixPath(name).parts
        if (
            not parts
            or name.startswith("/")
            or ".." in parts
            or "." in parts
            or any(not p.isprintable() for p in parts)
        ):
            raise UpdateError(f"{where}: {name[:MAX_WORD]!r} escapes the root or is not a path")
        if not (info.isfile() or info.issym()):
            raise UpdateError(f"{where}: {name[:MAX_WORD]!r} is neither a file nor a symlink")
        normal = "/".join(parts)
        if normal in seen:
            raise UpdateError(f"{where}: {normal[:MAX_WORD]!r} is there twice")
        seen.add(normal)
        link = info.linkname if info.issym() else None
        found.append((RootEntry(normal, info.mode & 0o7777, link), info))
    return found


# -- writing a bundle -----------------------------------------------------------------------


def _info(name: str, size: int, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = BUNDLE_MTIME
    return info


def write_bundle(target: Path, meta: UpdateMeta, files: Mapping[str, Path]) -> None:
    """Write the unsigned bundle of ``meta`` to ``target``: update.json, then
    each member from ``files`` (member path -> file), in the metadata's order. The file
    is written beside ``target`` and renamed over it whole."""
    part = target.with_name(f".{target.name}.part")
    try:
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as archive:
            metadata = meta.encoded()
            archive.addfile(_info(METADATA, len(metadata)), io.BytesIO(metadata))
            for member in meta.members:
                mode = 0o755 if member.type == "script" else 0o644
                with files[member.path].open("rb") as stream:
                    archive.addfile(_info(member.path, member.size, mode), stream)
        part.replace(target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def copy_members(bundle: Bundle) -> Iterable[tuple[Member, IO[bytes]]]:
    """Each member of ``bundle`` with a stream of its bytes, in the metadata's order (for
    writing the bundle again, signed)."""
    with tarfile.open(bundle.path, "r:") as archive:
        for member in bundle.meta.members:
            stream = archive.extractfile(member.path)
            if stream is None:
                raise UpdateError(f"{bundle.path}: {member.path} is not a regular file")
            yield member, stream


def signed_copy(bundle: Bundle, target: Path, signature: bytes) -> None:
    """``bundle`` written to ``target`` with ``signature`` (its update.json as it was)."""
    part = target.with_name(f".{target.name}.part")
    try:
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as archive:
            archive.addfile(_info(METADATA, len(bundle.metadata)), io.BytesIO(bundle.metadata))
            archive.addfile(_info(SIGNATURE, len(signature)), io.BytesIO(signature))
            for member, stream in copy_members(bundle):
                mode = 0o755 if member.type == "script" else 0o644
                archive.addfile(_info(member.path, member.size, mode), stream)
        part.replace(target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
