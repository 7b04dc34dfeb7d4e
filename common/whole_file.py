"""A file that appears whole or not at all. A leaf module.

    with whole_file(path, exists="...") as file:   # a new hidden file beside path, 0600
        file.write(...)                            # becomes path once the block ends

The bytes go to ``.<name>.<random>.part`` beside ``path``; when the block ends without an
error the file is synced and takes ``path``'s name: by a hard link, so that a file that
is there, made meanwhile too, is never overwritten (InputError ``exists``), or with
``replace`` by a rename over it. On a file system without hard links the name is checked,
then renamed. The ``.part`` file is removed in any case: an error leaves nothing behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from common.errors import InputError, NetinstallError


@contextmanager
def whole_file(path: Path, exists: str, *, replace: bool = False) -> Iterator[BinaryIO]:
    """A new private file that becomes ``path`` once the block ends without an error (see
    the module); InputError ``exists`` if ``path`` is there (unless ``replace``), and one
    naming ``path`` if its directory takes no new file."""
    part = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        _name(part, path, exists, replace)
    finally:
        part.unlink(missing_ok=True)


def _name(part: Path, path: Path, exists: str, replace: bool) -> None:
    try:
        if replace:
            os.replace(part, path)
            return
        try:
            os.link(part, path)
        except FileExistsError:
            raise InputError(exists) from None
        except OSError:  # no hard links here (vfat, some network file systems)
            if path.exists() or path.is_symlink():
                raise InputError(exists) from None
            os.replace(part, path)
    except OSError as exc:
        raise NetinstallError(f"cannot write {path}: {exc.strerror or exc}") from None
