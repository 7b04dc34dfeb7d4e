"""The PostgreSQL driver runs its C implementation (pyproject.toml: psycopg[c]), built
against Debian's libpq: the pure Python one costs a ctypes call per cell read."""

import psycopg


def test_psycopg_runs_its_c_implementation() -> None:
    assert psycopg.pq.__impl__ == "c", f"psycopg's {psycopg.pq.__impl__} implementation"
    assert psycopg.pq.version() >= 150000  # Debian 12's libpq5 or newer
