"""The shared directory: files every server of one registry serves alike (docs/deployment.md).

Several ``server run`` processes on one PostgreSQL registry each have a server directory
of their own (its ``database-url``, its copy of the API token, what it generates at
start). What a host, its agent or an operator may ask any of them for lives in one
directory they all reach (an NFS or CephFS mount, say), which ``netinstall server init
--shared-dir PATH`` records in ``DIR/shared-dir``:

    PATH/logs/<mac>/   the installers' uploaded log bundles (``PUT .../logs``), listed and
                       fetched through the operator API of any server
    PATH/files/        the operator's files, served at ``/files/``

Without it (one server, SQLite or not) they are the server directory's own, as always.
Boot configs and answer files are rendered from the registry by whichever server is
asked; nothing of them is kept on disk.

    shared(directory)             -> the shared directory (the recorded one, else DIR)
    record(directory, path)       -> the path recorded (InputError for another one)
"""

from __future__ import annotations

from pathlib import Path

from common.errors import InputError, NetinstallError

SHARED_DIR_FILE = "shared-dir"  # in the server directory: the shared directory's path
LOGS_DIR = "logs"  # in the shared directory: the uploaded log bundles, by host


def recorded(directory: Path) -> Path | None:
    """The shared directory ``directory`` records, None if it records none."""
    where = Path(directory) / SHARED_DIR_FILE
    try:
        text = where.read_text("utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NetinstallError(f"cannot read {where}: {exc.strerror}") from None
    if not text.startswith("/"):
        raise NetinstallError(f"{where} does not hold an absolute path: {text[:200]!r}")
    return Path(text)


def shared(directory: Path) -> Path:
    """Where ``directory``'s server keeps the files every server serves: the recorded
    shared directory, which must exist (a mount that is not there is refused, rather
    than files written beside it), else ``directory`` itself."""
    found = recorded(directory)
    if found is None:
        return Path(directory)
    if not found.is_dir():
        raise NetinstallError(
            f"the shared directory {found} (recorded in {Path(directory) / SHARED_DIR_FILE}) "
            "is not there: mount it, or edit that file"
        )
    return found


def record(directory: Path, path: str) -> Path:
    """Record ``path`` (made if missing) as ``directory``'s shared directory; the path
    recorded. The same one again is fine; another one is refused."""
    given = Path(path).expanduser()
    try:
        given.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--shared-dir {path}: cannot make it ({exc.strerror})") from None
    if not given.is_dir():
        raise InputError(f"--shared-dir {path}: not a directory")
    resolved = given.resolve()
    current = recorded(directory)
    if current is not None and current != resolved:
        raise InputError(
            f"{directory} records another shared directory already ({current}); edit or "
            f"remove {Path(directory) / SHARED_DIR_FILE} to change it"
        )
    (Path(directory) / SHARED_DIR_FILE).write_text(f"{resolved}\n", "utf-8")
    return resolved
