"""Unit tests are pure: a test that starts a subprocess fails (as curtin's test base does)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from pxe_server.registry import Registry, default_profile


@pytest.fixture(autouse=True)
def _no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(f"unit tests must not start processes: {args[:1]!r}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    """A registry of its own with the default profile (a test file may define its own)."""
    with Registry.open(tmp_path) as registry:
        registry.add_profile(default_profile())
        yield registry
