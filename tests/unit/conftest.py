"""Unit tests are pure: a test that starts a subprocess fails (as curtin's test base does).
The registry's engine here is SQLite (tests/registry_engines.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.registry_engines import reg

__all__ = ["reg"]


@pytest.fixture(autouse=True)
def _no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(f"unit tests must not start processes: {args[:1]!r}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture
def engine() -> str:
    """The registry's engine under test: SQLite here, PostgreSQL in tests/integration."""
    return "sqlite"


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    """A server directory whose registry is SQLite (``DIR/registry.sqlite``)."""
    return tmp_path
