"""Where a registry lives, its engine and connections, and what only one engine has.

A server directory's registry is SQLite, ``DIR/registry.sqlite`` (the default), unless
the directory records a PostgreSQL URL in ``DIR/database-url`` (0600: a URL may hold a
password; ``netinstall server init --db URL`` writes it). Queries are the same on both
(SQLAlchemy Core); only the set-up here differs:

* Every connection is in the driver's autocommit mode and ``Store.transaction`` opens
  each write transaction itself: ``BEGIN IMMEDIATE`` on SQLite (the write lock taken up
  front, so a read-modify-write never fails half-way on a lock another writer took),
  ``BEGIN`` (read committed) on PostgreSQL, where the registry locks the rows it
  changes (``SELECT ... FOR UPDATE``, which SQLite's compiler leaves out: its one
  write lock is held already). Reads outside a write see every committed write.
* SQLite: WAL (readers never block the writer), a busy timeout, foreign keys,
  ``secure_delete`` on every connection; a reader connection is ``query_only``; the
  event loop's ``write_now`` connection waits for no lock (busy timeout 0) and never
  checkpoints (the writer thread does); ``scrub`` vacuums and truncates the WAL.
* PostgreSQL (psycopg 3): a connect timeout, and a lock timeout equal to SQLite's busy
  timeout (a write waits for another server's row lock as long as a SQLite write waits
  for another process). No ``write_now`` connection: the event loop must never wait for
  the network or another server's lock, so every write goes to the writer thread
  (``WouldWait``). No checkpoints or vacuum: PostgreSQL's own autovacuum does that.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import URL, Connection, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from common.errors import InputError, NetinstallError
from pxe_server.secrets import write_secret_file

REGISTRY_FILE = "registry.sqlite"
DATABASE_URL_FILE = "database-url"  # the PostgreSQL registry's URL (0600), if not SQLite
BUSY_TIMEOUT_MS = 10_000  # a write waits this long for another writer's lock (both engines)
CONNECT_TIMEOUT = 10  # seconds to reach a PostgreSQL server before the open fails
POSTGRESQL_DRIVER = "postgresql+psycopg"

Role = Literal["writer", "reader", "now"]


class WouldWait(Exception):
    """``Registry.write_now`` could not start its write without waiting (another thread
    of ours, or another process, is writing; on PostgreSQL always): nothing was written;
    write it on the writer thread."""


def database_url(text: str) -> URL:
    """``text`` as a PostgreSQL URL for psycopg; InputError saying why not."""
    try:
        url = make_url(text.strip())
    except ArgumentError:
        raise InputError(
            f"--db {text!r} is not a database URL; expected postgresql://USER@/DBNAME"
            "?host=/SOCKET/DIR or postgresql://USER:PASSWORD@HOST/DBNAME"
        ) from None
    if url.drivername not in ("postgresql", "postgres", POSTGRESQL_DRIVER):
        raise InputError(
            f"--db {shown(url)}: only PostgreSQL URLs (postgresql://...) are understood; "
            "without --db the registry is SQLite in the server directory"
        )
    if not url.database:
        raise InputError(f"--db {shown(url)} names no database (postgresql://USER@HOST/DBNAME)")
    return url.set(drivername=POSTGRESQL_DRIVER)


def shown(url: URL) -> str:
    """``url`` for messages and listings: its password hidden."""
    return url.render_as_string(hide_password=True)


def recorded_url(directory: Path) -> URL | None:
    """The PostgreSQL URL ``directory`` records; None for a SQLite registry."""
    where = Path(directory) / DATABASE_URL_FILE
    try:
        text = where.read_text("utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NetinstallError(f"cannot read {where}: {exc.strerror}") from None
    try:
        return database_url(text)
    except InputError as exc:
        raise NetinstallError(f"{where}: {exc}") from None


def record_url(directory: Path, url: URL) -> None:
    """Record ``url`` as ``directory``'s registry (0600: it may hold a password)."""
    text = url.render_as_string(hide_password=False)
    write_secret_file(Path(directory) / DATABASE_URL_FILE, text + "\n")


def has_registry(directory: Path) -> bool:
    """Whether ``directory`` has a registry (a SQLite file or a recorded URL)."""
    directory = Path(directory)
    return (directory / DATABASE_URL_FILE).is_file() or (directory / REGISTRY_FILE).is_file()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in (
        f"busy_timeout = {BUSY_TIMEOUT_MS}",
        "synchronous = NORMAL",
        "foreign_keys = ON",
        "secure_delete = ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


class Store:
    """One registry's engine: its connections, transactions, and SQLite's extras."""

    def __init__(self, directory: Path, url: URL | None = None) -> None:
        self.directory = Path(directory)
        url = url if url is not None else recorded_url(self.directory)
        if url is None:
            self.path = self.directory / REGISTRY_FILE
            self.where = str(self.path)
            self._prepare_file()
            self.engine = create_engine(
                URL.create("sqlite+pysqlite", database=str(self.path)),
                poolclass=NullPool,  # the registry keeps its connections itself
                isolation_level="AUTOCOMMIT",
                connect_args={"check_same_thread": False},
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.path = self.directory / DATABASE_URL_FILE
            self.where = shown(url)
            try:
                self.engine = create_engine(
                    url,
                    poolclass=NullPool,
                    isolation_level="AUTOCOMMIT",
                    connect_args={
                        "connect_timeout": CONNECT_TIMEOUT,
                        "options": f"-c lock_timeout={BUSY_TIMEOUT_MS}",
                        "application_name": "netinstall",
                    },
                )
            except (ArgumentError, NoSuchModuleError) as exc:
                why = f"cannot use the registry database {self.where}: {exc}"
                raise NetinstallError(why) from None
        self.sqlite = self.engine.dialect.name == "sqlite"
        self._begin = "BEGIN IMMEDIATE" if self.sqlite else "BEGIN"

    def _prepare_file(self) -> None:
        """The SQLite file, created 0600 (dir 0700) before SQLite sees it: it holds tokens
        (WAL files copy the mode). Only when missing: closing any descriptor of a file
        drops every POSIX lock this process holds on it, and a connection of ours without
        its shared lock lets another process's close delete the WAL under us."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists():
                with suppress(FileExistsError):
                    os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise NetinstallError(f"cannot open the registry {self.path}: {exc}") from exc

    def error(self, exc: SQLAlchemyError) -> NetinstallError:
        """``exc`` (the database refused or could not be reached) as one sentence."""
        detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        lines = [line.strip() for line in str(detail).splitlines() if line.strip()]
        why = lines[0] if lines else type(detail).__name__
        return NetinstallError(f"cannot open the registry {self.where}: {why}")

    def connect(self, role: Role) -> Connection:
        """A new connection for ``role``: the writer's, a thread's reads, ``write_now``'s."""
        conn = self.engine.connect()
        if self.sqlite:
            if role == "writer":
                conn.exec_driver_sql("PRAGMA journal_mode = WAL")
            elif role == "reader":
                conn.exec_driver_sql("PRAGMA query_only = ON")
            else:
                conn.exec_driver_sql("PRAGMA busy_timeout = 0")  # BUSY at once, no wait
                conn.exec_driver_sql("PRAGMA wal_autocheckpoint = 0")  # the writer thread's
        return conn

    @property
    def writes_now(self) -> bool:
        """Whether ``write_now`` may write on the caller's thread (SQLite only)."""
        return self.sqlite

    @contextmanager
    def transaction(self, conn: Connection, *, now: bool = False) -> Iterator[Connection]:
        """One write transaction on ``conn``; with ``now``, WouldWait (nothing begun) if
        another connection holds SQLite's write lock."""
        try:
            conn.exec_driver_sql(self._begin)
        except DBAPIError as exc:
            if now and self._busy(exc):
                raise WouldWait from None
            self._recover(conn, exc)
            raise
        try:
            yield conn
        except BaseException as exc:
            with suppress(SQLAlchemyError):
                conn.exec_driver_sql("ROLLBACK")
            if isinstance(exc, DBAPIError):
                self._recover(conn, exc)
            raise
        conn.exec_driver_sql("COMMIT")

    @staticmethod
    def _busy(exc: DBAPIError) -> bool:
        orig = exc.orig
        return isinstance(orig, sqlite3.OperationalError) and (
            orig.sqlite_errorcode == sqlite3.SQLITE_BUSY
        )

    @staticmethod
    def _recover(conn: Connection, exc: DBAPIError) -> None:
        """After a lost connection (a PostgreSQL server restarted): the next use connects
        again instead of failing for ever."""
        if exc.connection_invalidated:
            with suppress(SQLAlchemyError):
                conn.rollback()

    def lock_schema(self, conn: Connection) -> None:
        """Inside a write transaction: no other server migrates or initialises the
        registry at the same time (SQLite's write lock does that already)."""
        if not self.sqlite:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7471320019)")

    def checkpoint(self, conn: Connection) -> None:
        """A PASSIVE WAL checkpoint (it waits for no reader or writer); SQLite only."""
        if self.sqlite:
            with suppress(SQLAlchemyError):
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def scrub(self, conn: Connection) -> str | None:
        """Leave no page of the file or its WAL with text a migration removed: vacuum
        (no free pages), then checkpoint and truncate the WAL; why not, if it could not
        finish (another connection's reads hold the WAL). Only SQLite registries have
        such migrations (the hand-written ones)."""
        if not self.sqlite:
            return None
        try:
            conn.exec_driver_sql("VACUUM")
            row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except DBAPIError as exc:
            return str(exc.orig)
        if row is None or row[0]:
            return "the WAL is in use by another connection"
        return None

    def truncate_wal(self, conn: Connection) -> None:
        if self.sqlite:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def dispose(self) -> None:
        self.engine.dispose()
