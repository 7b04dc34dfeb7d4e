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

import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from sqlalchemy import URL, Connection, Executable, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from common.errors import InputError, NetinstallError
from pxe_server.secrets import write_secret_file

REGISTRY_FILE = "registry.sqlite"
DATABASE_URL_FILE = "database-url"  # the PostgreSQL registry's URL (0600), if not SQLite
BUSY_TIMEOUT_MS = 10_000  # a write waits this long for another writer's lock (both engines)
log = logging.getLogger("netinstall.registry")

# Statements a store keeps compiled (``Store._prepared``): the registry's are built once,
# a few hundred; past this, statements are run through SQLAlchemy (its own bounded cache).
MAX_COMPILED = 1024
CONNECT_TIMEOUT = 10  # seconds to reach a PostgreSQL server before the open fails
POSTGRESQL_DRIVER = "postgresql+psycopg"

Role = Literal["writer", "reader", "now"]
# A statement compiled for the driver: its SQL, its parameters' names in order (SQLite's
# qmark style; PostgreSQL's pyformat takes them by name: empty), their values where the
# statement holds them (constants of the query), and the conversions some parameters need
# (PostgreSQL's booleans, as SQLAlchemy's would make them).
Prepared = tuple[str, tuple[str, ...], dict[str, Any], dict[str, Any]]


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
    """``url`` for messages and listings, as an operator writes it: its password hidden."""
    text = url.set(drivername="postgresql").render_as_string(hide_password=True)
    return unquote(text)


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
        # The driver's base error (PostgreSQL's, for ``_driver``); SQLite's own path re-runs.
        self._driver_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        self._begin = "BEGIN IMMEDIATE" if self.sqlite else "BEGIN"
        # SQLite's compiled statements (``_prepared``), by statement and parameter names.
        self._compiled: dict[tuple[int, tuple[str, ...]], Prepared | None] = {}
        self._statements: dict[int, Executable] = {}
        self._compiled_full = False  # MAX_COMPILED reached (said once)

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
            self._control(conn, self._begin)
        except SQLAlchemyError as exc:
            if now and isinstance(exc, DBAPIError) and self._busy(exc):
                raise WouldWait from None
            if not self._recover(conn):
                raise
            # The connection was lost before this transaction began (nothing of it was
            # sent): begin once more on a new one.
            self._control(conn, self._begin)
        try:
            yield conn
        except BaseException:
            with suppress(SQLAlchemyError):
                self._control(conn, "ROLLBACK")
            self._recover(conn)
            raise
        try:
            self._control(conn, "COMMIT")
        except SQLAlchemyError:
            self._recover(conn)  # a lost connection: whether it committed is unknown
            raise

    def alone(
        self, conn: Connection, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> int:
        """A write that is one statement, as a transaction of its own (how many rows it
        changed): the statement alone, in autocommit, with no BEGIN and no COMMIT (on
        PostgreSQL two round trips fewer). PostgreSQL only: SQLite's writes take its write
        lock first (``transaction``, BEGIN IMMEDIATE), and cost nothing more there."""
        if self.sqlite:
            raise ValueError("Store.alone is for PostgreSQL; SQLite writes use transaction()")
        try:
            return self.rowcount(conn, statement, params)
        except SQLAlchemyError:
            self._recover(conn)  # a lost connection: whether it committed is unknown
            raise

    def _control(self, conn: Connection, statement: str) -> None:
        """BEGIN, COMMIT or ROLLBACK. SQLite's straight on its connection: SQLAlchemy's
        statement machinery costs more than SQLite's own work here, twice a write on
        the event loop's thread; on a failure the statement runs again through
        SQLAlchemy, whose error (wrapped, with its SQL) is raised."""
        if self.sqlite:
            try:
                conn.connection.dbapi_connection.execute(statement)  # type: ignore[union-attr]
            except sqlite3.Error:
                pass
            else:
                return
            conn.exec_driver_sql(statement)
            return
        # PostgreSQL: never run again (a COMMIT that failed has rolled back; a second one
        # would only warn): the driver's error is raised as SQLAlchemy raises it.
        self._driver(conn, statement, None)

    @staticmethod
    def _busy(exc: DBAPIError) -> bool:
        orig = exc.orig
        return isinstance(orig, sqlite3.OperationalError) and (
            orig.sqlite_errorcode == sqlite3.SQLITE_BUSY
        )

    @staticmethod
    def _recover(conn: Connection) -> bool:
        """After a lost connection (a PostgreSQL server restarted, an administrator ended
        it): reset it, so that its next use connects again instead of failing for ever.
        Whether it was lost."""
        if not conn.invalidated:
            return False
        with suppress(SQLAlchemyError):
            conn.rollback()
        return True

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

    # -- running statements --------------------------------------------------------

    def rows(
        self, conn: Connection, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Sequence[Any]]:
        """Every row ``statement`` returns (a SELECT, or a write's RETURNING), as tuples."""
        prepared = self._prepared(statement, params or {})
        if prepared is not None:
            rows: list[tuple[Any, ...]] = self._run(conn, prepared, params or {}).fetchall()
            return rows
        return conn.execute(statement, params or {}).all()

    def rowcount(
        self, conn: Connection, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> int:
        """How many rows a write without RETURNING changed."""
        prepared = self._prepared(statement, params or {})
        if prepared is not None:
            return int(self._run(conn, prepared, params or {}).rowcount)
        return int(conn.execute(statement, params or {}).rowcount)

    def many(
        self, conn: Connection, statement: Executable, params: Sequence[Mapping[str, Any]]
    ) -> None:
        """One write for each of ``params`` (rows of an INSERT), in one call."""
        if not params:
            return
        prepared = self._prepared(statement, params[0])
        if prepared is None:
            conn.execute(statement, list(params))
            return
        sql, names, defaults, convert = prepared
        if self.sqlite:
            rows = [tuple(p[n] if n in p else defaults[n] for n in names) for p in params]
            conn.connection.dbapi_connection.executemany(sql, rows)  # type: ignore[union-attr]
            return
        self._driver(conn, sql, [self._named(p, defaults, convert) for p in params], many=True)

    def rows_each(
        self, conn: Connection, statement: Executable, params: Sequence[Mapping[str, Any]]
    ) -> list[Sequence[Sequence[Any]]]:
        """The rows ``statement`` returns for each of ``params`` (a write's RETURNING), in
        their order. On PostgreSQL the statements go in one round trip (the driver's
        pipeline), not one each: a batch of progress events updates its hosts in one wait
        on the writer's connection. (SQLite runs them one by one: it is in the process.)"""
        if not params:
            return []
        prepared = self._prepared(statement, params[0])
        if prepared is None or self.sqlite:
            return [self.rows(conn, statement, p) for p in params]
        sql, _, defaults, convert = prepared
        values = [self._named(p, defaults, convert) for p in params]
        found: list[Sequence[Sequence[Any]]] = []
        driver = conn.connection.dbapi_connection
        try:
            with driver.cursor() as cursor:  # type: ignore[union-attr]
                cursor.executemany(sql, values, returning=True)
                while True:
                    found.append(cursor.fetchall())
                    if not cursor.nextset():
                        break
        except self._driver_error as exc:
            raise self._wrapped(conn, sql, values, exc) from None
        return found

    def _run(self, conn: Connection, prepared: Prepared, params: Mapping[str, Any]) -> Any:
        sql, names, defaults, convert = prepared
        if self.sqlite:
            values = tuple(params[n] if n in params else defaults[n] for n in names)
            return conn.connection.dbapi_connection.execute(sql, values)  # type: ignore[union-attr]
        return self._driver(conn, sql, self._named(params, defaults, convert))

    @staticmethod
    def _named(
        params: Mapping[str, Any], defaults: dict[str, Any], convert: dict[str, Any]
    ) -> dict[str, Any]:
        values = {**defaults, **params}
        for name, conversion in convert.items():
            values[name] = conversion(values[name])
        return values

    def _driver(self, conn: Connection, sql: str, values: Any, *, many: bool = False) -> Any:
        """PostgreSQL: ``sql`` on the driver's connection; the driver's error raised as
        SQLAlchemy raises it (``DBAPIError``, the connection invalidated when it was lost,
        so that ``_recover`` and ``store.outage`` see what they see through SQLAlchemy)."""
        driver = conn.connection.dbapi_connection
        try:
            if many:
                with driver.cursor() as cursor:  # type: ignore[union-attr]
                    cursor.executemany(sql, values)
                return None
            return driver.execute(sql, values)  # type: ignore[union-attr]
        except self._driver_error as exc:
            raise self._wrapped(conn, sql, values, exc) from None

    def _wrapped(self, conn: Connection, sql: str, values: Any, exc: Exception) -> StatementError:
        """The driver's error ``exc`` as SQLAlchemy raises it (the connection invalidated
        when it was lost)."""
        driver = conn.connection.dbapi_connection
        dialect = self.engine.dialect
        lost = bool(dialect.is_disconnect(exc, driver, None))  # type: ignore[arg-type]
        if lost:
            conn.invalidate(exc)
        return DBAPIError.instance(
            sql, values, exc, self._driver_error, hide_parameters=True,
            connection_invalidated=lost, dialect=dialect,
        )  # fmt: skip

    def _prepared(self, statement: Executable, params: Mapping[str, Any]) -> Prepared | None:
        """``statement`` compiled once by SQLAlchemy for this engine's dialect, to be run
        straight on the driver's connection (None: run it through SQLAlchemy).
        SQLAlchemy's execution machinery costs more than the database's own work for the
        registry's short statements, several of them a request (PostgreSQL: 59 us a
        host read through it, 18 us straight, 10,000 hosts' fleet at 2 servers); the
        SQL is what SQLAlchemy would send (PostgreSQL's with its casts), and the values
        need no conversion but the ones SQLAlchemy's types would make (text, numbers,
        None; SQLite's booleans are integers; PostgreSQL's Boolean's checked as SQLAlchemy
        checks them). A statement with a list parameter (IN ...) is expanded by SQLAlchemy
        at each run, so it goes through SQLAlchemy."""
        key = (id(statement), tuple(params))
        try:
            return self._compiled[key]
        except KeyError:
            pass
        if len(self._compiled) >= MAX_COMPILED:  # statements made per call: none kept
            if not self._compiled_full:
                self._compiled_full = True
                log.warning("registry %s: %d statements compiled; no more are kept (a "
                            "statement built per call?)", self.where, MAX_COMPILED)  # fmt: skip
            return None
        if not isinstance(statement, ClauseElement):
            return None
        compiled = statement.compile(dialect=self.engine.dialect, column_keys=list(params))
        found: Prepared | None = None
        binds = compiled.binds if isinstance(compiled, SQLCompiler) else None
        if binds is not None and not any(bind.expanding for bind in binds.values()):
            defaults = {n: b.effective_value for n, b in binds.items() if n not in params}
            convert = {}
            if not self.sqlite:
                dialect = self.engine.dialect
                for name, bind in binds.items():
                    conversion = dialect.type_descriptor(bind.type).bind_processor(dialect)
                    if conversion is not None:
                        convert[name] = conversion
            names = tuple(getattr(compiled, "positiontup", None) or ())
            found = (str(compiled), names, defaults, convert)
        self._compiled[key] = found
        self._statements[id(statement)] = statement  # its id() stays its own while cached
        return found

    def dispose(self) -> None:
        self.engine.dispose()
