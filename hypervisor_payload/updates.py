"""``netinstall update build``: an update bundle from a source directory (README "Updates").

An update *source* (``updates_example/`` is one) is a directory with ``update.toml``
(``id``, ``name``, ``version``, ``applies_to`` (payload versions) and ``reboot``), and
optionally ``debs/*.deb``, a ``root/`` tree that becomes ``root.tar`` (as a pack's
root tarball: files and symlinks, fixed owner and time) and a ``post-apply.sh``. The
bundle (``common.update_bundle``) is byte-reproducible and unsigned: ``update add``
signs it with the server's update key, which never leaves the server.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import tomllib
from pathlib import Path

from common.update_bundle import (
    DEBS_DIR,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS,
    ROOT_TAR,
    SCRIPT,
    Member,
    UpdateError,
    UpdateMeta,
    member_type,
    parse_metadata,
    read_bundle,
    root_entries,
    write_bundle,
)
from hypervisor_payload.checksums import sha256_file
from hypervisor_payload.packs import PackError, write_root_tar

SOURCE_FILE = "update.toml"
_KEYS = {"id", "name", "version", "applies_to", "reboot"}


def _source_metadata(source: Path) -> dict[str, object]:
    where = f"update source {source}"
    try:
        data = tomllib.loads((source / SOURCE_FILE).read_text("utf-8"))
    except FileNotFoundError:
        raise UpdateError(f"{where}: {SOURCE_FILE} is missing") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UpdateError(f"{where}: {SOURCE_FILE}: {exc}") from None
    except OSError as exc:
        raise UpdateError(f"{where}: {SOURCE_FILE}: {exc.strerror}") from None
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise UpdateError(f"{where}: {SOURCE_FILE}: unknown keys {', '.join(unknown)}")
    missing = sorted(_KEYS - set(data))
    if missing:
        raise UpdateError(f"{where}: {SOURCE_FILE} needs {', '.join(missing)}")
    return data


def _member(path: Path, name: str) -> Member:
    size = path.stat().st_size
    if size > MAX_MEMBER_BYTES:
        raise UpdateError(f"{path} has more than {MAX_MEMBER_BYTES} bytes")
    kind = member_type(name)
    if kind is None:
        raise UpdateError(f"{path.name} is not a plain .deb file name")
    return Member(name, kind, size, sha256_file(path))


def build_update(source: Path, output: Path | None = None) -> tuple[UpdateMeta, Path]:
    """Build the update whose source is ``source`` into the bundle file ``output``
    (default: ``<id>.update`` in the current directory); its metadata and the file.

    UpdateError, one sentence, for a source that cannot be built (nothing written)."""
    if not source.is_dir():
        raise UpdateError(f"update source {source}: no such directory")
    data = _source_metadata(source)
    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="netinstall-update-") as scratch:
        for deb in sorted((source / DEBS_DIR).glob("*")):
            files[f"{DEBS_DIR}/{deb.name}"] = deb
        if (source / "root").is_dir():
            tar = Path(scratch) / ROOT_TAR
            try:
                write_root_tar(source / "root", tar)
            except PackError as exc:  # an entry that is neither a file nor a symlink
                raise UpdateError(f"update source {source}: root/: {exc}") from None
            with tarfile.open(tar, "r:") as archive:
                root_entries(archive, f"update source {source}: root/")
            files[ROOT_TAR] = tar
        if (source / SCRIPT).is_file():
            files[SCRIPT] = source / SCRIPT
        if not files:
            raise UpdateError(
                f"update source {source}: no debs/, root/ or {SCRIPT}: nothing to update"
            )
        if len(files) > MAX_MEMBERS:
            raise UpdateError(f"update source {source}: more than {MAX_MEMBERS} files")
        members = [_member(path, name) for name, path in files.items()]
        metadata = {"format": 1, **data, "members": [m.__dict__ for m in members]}
        meta = parse_metadata(json.dumps(metadata).encode("utf-8"))
        target = output or Path(f"{meta.id}.update")
        try:
            write_bundle(target, meta, files)
        except OSError as exc:
            raise UpdateError(f"cannot write {target}: {exc.strerror}") from None
    read_bundle(target)  # what update add and the agent will read: checked once here
    return meta, target
