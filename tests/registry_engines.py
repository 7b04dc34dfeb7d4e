"""The registry's engine under test, shared by the unit and the integration suites.

The registry's tests take ``registry_dir`` (a server directory whose registry is the
engine under test) and ``reg`` (a registry there with the default profile), never
``tmp_path`` for a registry. tests/unit/conftest.py makes them SQLite (``make check``);
tests/integration/conftest.py makes them PostgreSQL, on the session's throwaway cluster
(tests/postgres.py), and tests/integration/test_registry_postgresql.py collects the
same test functions there. A test about SQLite's own file (its WAL, pragmas, the
hand-written migrations) is marked ``sqlite_only`` and skipped on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, Executable, Row, event

from pxe_server.registry import Registry, default_profile
from pxe_server.store.engine import Store

sqlite_only = pytest.mark.sqlite_only

T = TypeVar("T")


@pytest.fixture
def reg(registry_dir: Path) -> Iterator[Registry]:
    """A registry of its own with the default profile (a test file may define its own)."""
    with Registry.open(registry_dir) as registry:
        registry.add_profile(default_profile())
        yield registry


def execute(directory: Path, *statements: Executable) -> list[list[Row[Any]]]:
    """Run ``statements`` (SQLAlchemy Core) on the registry of ``directory`` as another
    program would, outside any Registry, each committed at once; their rows."""
    store = Store(directory)
    found: list[list[Row[Any]]] = []
    try:
        with store.engine.connect() as conn:
            for statement in statements:
                result = conn.execute(statement)
                found.append(list(result.all()) if result.returns_rows else [])
    finally:
        store.dispose()
    return found


@contextmanager
def statements(conn: Connection) -> Iterator[list[str]]:
    """The SQL sent on ``conn`` while the body runs, on either engine (SQLite's as its
    driver saw it: the registry runs its short statements on the driver directly)."""
    sent: list[str] = []
    raw = conn.connection.dbapi_connection
    if isinstance(raw, sqlite3.Connection):
        raw.set_trace_callback(sent.append)
        try:
            yield sent
        finally:
            raw.set_trace_callback(None)
        return

    def record(*args: Any) -> None:
        sent.append(str(args[2]))  # (conn, cursor, statement, parameters, context, many)

    # PostgreSQL: what goes through SQLAlchemy (its events), and what the registry runs
    # on the driver directly (``Store._driver``, every such statement on this connection).
    driver = Store._driver

    def direct(store: Store, on: Connection, sql: str, *args: Any, **kwargs: Any) -> Any:
        if on is conn:
            sent.append(sql)
        return driver(store, on, sql, *args, **kwargs)

    event.listen(conn, "before_cursor_execute", record)
    Store._driver = direct  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        event.remove(conn, "before_cursor_execute", record)
        Store._driver = driver  # type: ignore[method-assign]


def together(work: Callable[[T], object], args: Sequence[T], timeout: float = 60) -> None:
    """``work(arg)`` for each of ``args``, a thread each, all let go at once (a barrier),
    as several writers of one registry; AssertionError with what any of them raised, or
    if one is still running after ``timeout`` seconds."""
    start = threading.Barrier(len(args))
    errors: list[BaseException] = []

    def run(arg: T) -> None:
        try:
            start.wait(timeout=timeout)
            work(arg)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(arg,)) for arg in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), f"still running after {timeout} s"
    assert errors == []
