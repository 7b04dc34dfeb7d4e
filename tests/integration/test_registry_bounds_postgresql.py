"""The registry's bounds on PostgreSQL: a server that never answers fails the open after
``CONNECT_TIMEOUT``; a write waits at most ``BUSY_TIMEOUT_MS`` for another server's row
lock (PostgreSQL's lock_timeout, as SQLite's busy timeout)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from common.errors import NetinstallError
from pxe_server.model import State
from pxe_server.registry import Registry, default_profile
from pxe_server.store import engine
from pxe_server.store.engine import database_url, record_url
from tests import postgres

MAC = "52:54:00:12:34:56"


def test_a_server_that_never_answers_fails_the_open_after_the_connect_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "CONNECT_TIMEOUT", 2)
    with socket.socket() as silent:  # accepts connections (the backlog), never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        record_url(tmp_path, database_url(f"postgresql://u@127.0.0.1:{port}/x"))
        began = time.monotonic()
        with pytest.raises(NetinstallError, match="cannot open the registry"):
            Registry.open(tmp_path)
        took = time.monotonic() - began
    assert 1.5 < took < 10, took


def test_a_write_waits_for_another_servers_row_lock_at_most_the_busy_timeout(
    tmp_path: Path,
    postgres_cluster: postgres.Cluster,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "BUSY_TIMEOUT_MS", 1000)
    record_url(tmp_path, database_url(postgres_url))
    with Registry.open(tmp_path) as registry:
        registry.add_profile(default_profile())
        registry.add_host(MAC)
        with postgres_cluster.connect(str(make_url(postgres_url).database)) as other:
            other.autocommit = False
            other.execute("SELECT mac FROM hosts WHERE mac = %s FOR UPDATE", (MAC,))
            began = time.monotonic()
            with pytest.raises(OperationalError) as waited:
                registry.record_event(MAC, State.INSTALLING)
            took = time.monotonic() - began
            other.rollback()
        assert isinstance(waited.value.orig, psycopg.errors.LockNotAvailable)
        assert 0.8 < took < 5, took
        host, _ = registry.record_event(MAC, State.INSTALLING)  # the lock gone: it goes on
        assert host.state is State.INSTALLING
