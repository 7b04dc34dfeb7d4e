"""``netinstall server backup|restore|migrate``: the registry copied whole (either engine),
through ``pxe_server.store.copy`` (docs/deployment.md, "Backups").

All three work on the server's own directory (never with ``--server``). Progress goes
to stderr (a line per table, and every ``PROGRESS_ROWS`` rows of a long one), the
summary to stdout. The server directory's ``api-token`` is carried in a backup (the
registry keeps only its keyed hash), and its ``bmc-key`` (the BMC passwords the registry
holds sealed open with it alone); ``database-url`` never is (it may hold a
password), nor ``files/`` and ``logs/`` (copy those as files).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import click

from common.errors import InputError, NetinstallError
from netinstall.cli_options import dir_option, open_registry, refuse_remote, server_directory

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from pxe_server.store.engine import Store

# Server-directory files a backup carries: the API token's only copy, the BMC key.
CARRIED = ("api-token", "bmc-key")


def _progress(line: str) -> None:
    click.echo(line, err=True)


def _sqlite_files(where: Path) -> list[Path]:
    from pxe_server.store.engine import REGISTRY_FILE

    main = where / REGISTRY_FILE
    return [main, main.with_name(main.name + "-wal"), main.with_name(main.name + "-shm")]


def _refuse_users(where: Path, doing: str) -> None:
    """InputError if another process has ``where``'s SQLite registry open: a running
    server (there is no pid file; /proc tells who has the file open)."""
    from pxe_server.store.copy import users_of

    found = users_of(p for p in _sqlite_files(where) if p.exists())
    if found:
        pid, command = found[0]
        raise InputError(
            f"cannot {doing}: process {pid} ({command[:120]}) has the registry "
            f"{_sqlite_files(where)[0]} open; stop the server (systemctl stop "
            "netinstall-server) and other netinstall commands on it first"
        )


def _refuse_connected(conn: Connection, store: Store, doing: str) -> None:
    from pxe_server.store.copy import others_connected

    others = others_connected(conn, store)
    if others:
        raise InputError(
            f"cannot {doing}: {others} other netinstall connection(s) use the database "
            f"{store.where}; stop every server on it first"
        )


def _refuse_content(conn: Connection, what: str, advice: str) -> None:
    """InputError if the registry on ``conn`` holds hosts, profiles, events...; the
    target of a restore or a migration must not, unless replaced."""
    from pxe_server.store.copy import content, describe

    found = content(conn)
    if found:
        raise InputError(f"{what} is not empty ({describe(found)}); {advice}")


@contextmanager
def _writing(store: Store, doing: str) -> Iterator[Connection]:
    """A write transaction on ``store``'s registry; a database that cannot be reached,
    or refuses a statement (all rolled back): one sentence."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        conn = store.connect("writer")
    except SQLAlchemyError as exc:
        raise store.error(exc) from None
    try:
        with store.transaction(conn):
            yield conn
    except SQLAlchemyError as exc:
        from sqlalchemy.exc import DBAPIError

        detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        why = next((line.strip() for line in str(detail).splitlines() if line.strip()), "")
        raise NetinstallError(
            f"cannot {doing} {store.where}: {why or type(detail).__name__}; nothing was changed"
        ) from None
    finally:
        with suppress(SQLAlchemyError):
            conn.close()


def _summary(done: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in done.items())


@click.command("backup")
@click.argument("positional", required=False, metavar="[DIR]")
@dir_option
@click.option(
    "--to",
    "target",
    required=True,
    metavar="FILE",
    help="The backup file to write (mode 0600; it must not exist).",
)
def server_backup(positional: str | None, directory: str, target: str) -> None:
    """Write the registry (either engine, one consistent snapshot, beside a running
    server) and the API token into FILE, for `server restore`."""
    from netinstall import __version__
    from pxe_server.store.copy import MAX_CARRIED_FILE, write_backup
    from pxe_server.store.engine import Store

    refuse_remote("server backup", "it reads the registry and the server directory")
    where = server_directory(directory, positional)
    with open_registry(where):
        pass  # brings the schema up to date (or refuses a newer one)
    files: dict[str, bytes] = {}
    for name in CARRIED:
        path = where / name
        if path.is_file():
            data = path.read_bytes()
            if len(data) > MAX_CARRIED_FILE:
                raise InputError(f"{path} has more than {MAX_CARRIED_FILE} bytes")
            files[name] = data
    store = Store(where)
    try:
        manifest = write_backup(Path(target), store, __version__, files, _progress)
    finally:
        store.dispose()
    rows = {t["name"]: t["rows"] for t in manifest["tables"]}
    click.echo(
        f"backup of {store.where} (revision {manifest['revision']}) written to {target} "
        f"(mode 0600): {_summary(rows)}; files: {', '.join(files) or 'none'}"
    )


@click.command("restore")
@click.argument("positional", required=False, metavar="[DIR]")
@dir_option
@click.option("--from", "source", required=True, metavar="FILE", help="A `server backup` file.")
@click.option(
    "--replace", is_flag=True, help="Replace a registry that holds hosts, profiles or events."
)
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Restore into this PostgreSQL database and record it in DIR/database-url (a "
    "directory without a registry only). Default: the registry DIR has, else SQLite.",
)
def server_restore(
    positional: str | None, directory: str, source: str, replace: bool, db_url: str | None
) -> None:
    """Restore a `server backup` file into DIR's registry (either engine), all or nothing;
    a registry that is not empty only with --replace. Stop the servers on it first."""
    from pxe_server.secrets import API_TOKEN_FILE, write_secret_file
    from pxe_server.store.copy import Backup, load
    from pxe_server.store.engine import Store, database_url, has_registry, record_url, shown

    refuse_remote("server restore", "it writes the registry and the server directory")
    where = server_directory(directory, positional)
    url = database_url(db_url) if db_url is not None else None
    if url is not None and has_registry(where):
        raise InputError(
            f"--db: {where} has a registry already; restore into it without --db, or give a "
            "new directory"
        )
    if where.exists() and not where.is_dir():
        raise InputError(f"{where} exists and is not a directory")
    with Backup(Path(source)) as backup, _unchanged(f"nothing was restored: {where} is as it was"):
        _progress(
            f"{source}: netinstall {backup.version}, revision {backup.revision}, from "
            f"{backup.engine}, {backup.created}"
        )
        backup.verify(_progress)  # every checksum before anything is touched
        _refuse_users(where, "restore")
        made_dir = not where.exists()
        made_file = url is None and not has_registry(where)
        if made_dir:
            where.mkdir(mode=0o700, parents=True)
        store = Store(where, url)
        try:
            with _writing(store, "restore into") as conn:
                if not replace:
                    _refuse_content(
                        conn,
                        f"the registry {store.where}",
                        "give --replace to replace it with the backup",
                    )
                _refuse_connected(conn, store, "restore")
                done = load(conn, store, backup.revision, backup.rows(), _progress)
        except BaseException:
            store.dispose()
            if made_file:
                for path in _sqlite_files(where):
                    path.unlink(missing_ok=True)
            if made_dir:
                with suppress(OSError):
                    where.rmdir()
            raise
        store.dispose()
        if url is not None:
            record_url(where, url)
        written = []
        for carried in backup.files:
            if carried.name in CARRIED:
                write_secret_file(where / carried.name, backup.file(carried).decode("utf-8"))
                written.append(carried.name)
    click.echo(
        f"restored {source} into {shown(url) if url is not None else store.where}: {_summary(done)}"
    )
    if API_TOKEN_FILE in written:
        click.echo(f"API token: {where / API_TOKEN_FILE} (the backup's, mode 0600)")
    else:
        click.echo(
            f"the backup carries no API token: `netinstall server token rotate {where}` makes one"
        )


@contextmanager
def _unchanged(said: str) -> Iterator[None]:
    """A failure inside (all or nothing: the transaction rolled back, nothing written
    before it) is said with ``said``, what was left as it was."""
    try:
        yield
    except InputError as exc:
        raise InputError([*exc.problems[:-1], f"{exc.problems[-1]}; {said}"]) from None
    except NetinstallError as exc:
        raise NetinstallError(f"{exc}; {said}") from None


def _aside(where: Path) -> Path:
    """Rename the SQLite registry (and any -wal/-shm beside it) aside; its new path."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    main, *others = _sqlite_files(where)
    aside = main.with_name(f"{main.name}.migrated-{stamp}")
    if aside.exists():
        raise NetinstallError(f"{aside} exists already")
    for path, suffix in zip(others, ("-wal", "-shm"), strict=True):
        if path.exists():
            path.rename(aside.with_name(aside.name + suffix))
    main.rename(aside)
    return aside


@click.command("migrate")
@click.argument("positional", required=False, metavar="[DIR]")
@dir_option
@click.option(
    "--to",
    "target",
    required=True,
    metavar="URL",
    help="An empty PostgreSQL database (postgresql://USER@/DB?host=/SOCKET/DIR or "
    "postgresql://USER:PASSWORD@HOST/DB).",
)
def server_migrate(positional: str | None, directory: str, target: str) -> None:
    """Copy DIR's SQLite registry into an empty PostgreSQL database, check the counts,
    record the URL in DIR/database-url and keep the SQLite file aside. Stop the server
    first."""
    from pxe_server.store.copy import counts, dump, load, revision, snapshot
    from pxe_server.store.engine import (
        REGISTRY_FILE,
        Store,
        database_url,
        record_url,
        recorded_url,
        shown,
    )

    refuse_remote("server migrate", "it moves the server directory's registry")
    where = server_directory(directory, positional)
    url = database_url(target)
    current = recorded_url(where)
    if current is not None:
        raise InputError(f"{where}'s registry is on PostgreSQL already ({shown(current)})")
    if not (where / REGISTRY_FILE).is_file():
        raise InputError(f"{where} holds no SQLite registry ({REGISTRY_FILE}) to migrate")
    _refuse_users(where, "migrate")
    with open_registry(where):
        pass  # brings the schema up to date (or refuses a newer one)
    source = Store(where)
    destination = Store(where, url)
    try:
        with (
            _unchanged(f"nothing was migrated: {where} keeps its SQLite registry"),
            snapshot(source, exclusive=True) as read,
            _writing(destination, "migrate into") as conn,
        ):
            _refuse_content(
                conn, f"the database {destination.where}", "migrate into an empty database"
            )
            _refuse_connected(conn, destination, "migrate")
            expected = counts(read)
            done = load(conn, destination, revision(read), dump(read, expected), _progress)
            if done != expected:
                raise NetinstallError(f"copied {done}, the SQLite registry has {expected}")
            _refuse_users(where, "migrate")  # still nobody else: the file can be set aside
    finally:
        source.dispose()
        destination.dispose()
    record_url(where, url)
    aside = _aside(where)
    click.echo(f"migrated {where / REGISTRY_FILE} to {shown(url)}: {_summary(done)}")
    click.echo(f"{where}/database-url records it (0600); the SQLite registry is kept as {aside}")
