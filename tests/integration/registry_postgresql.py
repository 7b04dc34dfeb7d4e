"""What the registry's unit suites need to run on PostgreSQL: their fixtures with a
PostgreSQL registry (tests/registry_engines.py). Each test_*_postgresql.py module
imports these and the test functions of one unit module: the same tests, not copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxe_server.store.engine import database_url, record_url
from tests.registry_engines import reg

__all__ = ["engine", "reg", "registry_dir", "skip_sqlite_only"]


@pytest.fixture
def engine() -> str:
    return "postgresql"


@pytest.fixture
def registry_dir(tmp_path: Path, postgres_url: str) -> Path:
    """A server directory whose registry is a fresh PostgreSQL database."""
    record_url(tmp_path, database_url(postgres_url))
    return tmp_path


@pytest.fixture(autouse=True)
def skip_sqlite_only(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("sqlite_only") is not None:
        pytest.skip("about SQLite's own file (its WAL, pragmas or hand-written migrations)")
