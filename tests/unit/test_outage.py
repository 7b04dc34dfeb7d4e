"""store.outage: which database errors are the database's passing trouble (a 503) and
which are bugs (a 500)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError, OperationalError

from pxe_server.store import outage


def raised(tmp_path: Path, *statements: str, timeout: float = 0) -> DBAPIError:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", connect_args={"timeout": timeout})
    with engine.connect() as conn:
        for statement in statements[:-1]:
            conn.exec_driver_sql(statement)
        with pytest.raises(DBAPIError) as caught:
            conn.exec_driver_sql(statements[-1])
        return caught.value


def test_a_locked_sqlite_database_is_an_outage(tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        exc = raised(tmp_path, "SELECT * FROM t")
    finally:
        holder.close()
    assert isinstance(exc, OperationalError)
    assert outage.reason(exc) == "database is locked"
    assert not outage.conflicted(exc)


def test_bugs_are_no_outage(tmp_path: Path) -> None:
    missing = raised(tmp_path, "SELECT * FROM nothere")
    assert isinstance(missing, OperationalError)  # sqlite3 says OperationalError for it
    assert outage.reason(missing) is None
    duplicate = raised(
        tmp_path, "CREATE TABLE u (x PRIMARY KEY)", "INSERT INTO u VALUES (1)",
        "INSERT INTO u VALUES (1)",
    )  # fmt: skip
    assert outage.reason(duplicate) is None
    assert outage.reason(ValueError("no database error")) is None
    assert not outage.conflicted(ValueError("x"))
