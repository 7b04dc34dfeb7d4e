"""A registry made by the release before Alembic opens with today's code: every record
reads back as the release read it, and the secrets it handed out still verify.

tests/data/registry/release-registry.sql is ``sqlite3 .dump`` of a registry that
make_release_registry.py filled with the release's code (schema 8 of the hand-written
migrations); release-registry.json is what that code read back, with the secrets."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from common.errors import NetinstallError
from pxe_server.model import Event, Host, Profile, State
from pxe_server.registry import REGISTRY_FILE, Registry
from pxe_server.store import rows
from pxe_server.store.schema import ALEMBIC_MARK, HEAD, SCRIPTS
from pxe_server.store.tables import metadata

DATA = Path(__file__).parents[1] / "data" / "registry"
EXPECTED = json.loads((DATA / "release-registry.json").read_text("utf-8"))
SECRETS = EXPECTED["secrets"]
PENDING = "52:54:00:00:01:01"
INSTALLING = "52:54:00:00:01:03"
RUNNING = "52:54:00:00:01:05"


def _value(value: Any) -> Any:
    """A record as the generator wrote it to JSON (make_release_registry._value)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _value(v) for k, v in value.items()}
    return value


def release_registry(directory: Path) -> Path:
    """The release's registry loaded from its dump into ``directory``, with its API token."""
    directory.mkdir(mode=0o700)
    conn = sqlite3.connect(directory / REGISTRY_FILE)
    conn.executescript((DATA / "release-registry.sql").read_text("utf-8"))
    conn.close()
    (directory / "api-token").write_text(SECRETS["api_token"] + "\n")
    (directory / "api-token").chmod(0o600)
    return directory


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return release_registry(tmp_path / "srv")


def test_every_record_reads_back_as_the_release_read_it(directory: Path) -> None:
    with Registry.open(directory) as reg:
        hosts = reg.list_hosts()
        assert [_value(h) | {"token": h.token} for h in hosts] == EXPECTED["hosts"]
        assert reg.settings() == EXPECTED["settings"]
        assert [_value(p) for p in reg.list_profiles()] == EXPECTED["profiles"]
        assert [_value(r) for r in reg.repositories()] == EXPECTED["repositories"]
        events = {h.mac: [_value(e) for e in reg.events(h.mac)] for h in hosts}
        assert events == EXPECTED["events"]
        assert len(hosts) == 9
        assert {h.state for h in hosts} == set(State)
    with sqlite3.connect(directory / REGISTRY_FILE) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(ALEMBIC_MARK,)]
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def test_the_secrets_the_release_handed_out_still_verify(directory: Path) -> None:
    with Registry.open(directory) as reg:
        assert reg.api_token_matches(SECRETS["api_token"])
        assert not reg.api_token_matches(SECRETS["api_token"][:-1] + "x")
        pending = reg.host_by_token(SECRETS["install_token"])
        assert pending is not None
        assert pending.mac == PENDING
        installing = reg.host_by_install_key(SECRETS["install_key"])
        assert installing is not None
        assert installing.mac == INSTALLING
        assert reg.host_by_token(SECRETS["installing_token"]) == installing
        running = reg.host_by_agent_credential(SECRETS["agent_credential"])
        assert running is not None
        assert running.mac == RUNNING
        # and they keep working: the pending host's install goes on, the agent checks in
        reg.record_event(PENDING, State.INSTALLING, step="partition")
        reg.check_in(RUNNING, "1.0", "running", seen=running)
        assert reg.host_by_token(SECRETS["install_token"]) is not None


def test_the_release_refuses_the_registry_once_alembic_manages_it(directory: Path) -> None:
    """schema_version 9 is what the release's own check reads as a newer schema."""
    Registry.open(directory).close()
    with sqlite3.connect(directory / REGISTRY_FILE) as conn:
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
    assert version > 8  # the release: "schema version 9, newer than this netinstall (8)"


# What SQLite stores alike: the release declared REAL and INTEGER where tables.py says
# Float, BigInteger and Boolean (same affinity, same values), and its TEXT primary keys
# allow NULL (SQLite's old quirk; the registry never writes one).
_SAME_IN_SQLITE = {("REAL", "FLOAT"), ("INTEGER", "BIGINT"), ("INTEGER", "BOOLEAN")}


def _differences(directory: Path) -> list[tuple[str, ...]]:
    engine = create_engine(f"sqlite:///{directory / REGISTRY_FILE}")
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            found = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    flat = [step for diff in found for step in (diff if isinstance(diff, list) else [diff])]
    return [tuple(str(part) for part in step[:7]) for step in flat]


def test_a_stamped_release_schema_and_a_new_one_both_match_the_tables(
    directory: Path, tmp_path: Path
) -> None:
    """What the hand-written migrations made, what Alembic's baseline makes, and
    tables.py agree (tables, columns, indexes; types as SQLite stores them)."""
    Registry.open(directory).close()
    Registry.open(tmp_path / "new").close()
    assert _differences(tmp_path / "new") == []
    primary = {(t.name, c.name) for t in metadata.tables.values() for c in t.primary_key}
    for kind, _, table, column, _, existing, new in _differences(directory):
        if kind == "modify_nullable":
            assert (table, column) in primary
        else:
            assert kind == "modify_type", (kind, table, column)
            assert (existing, new) in _SAME_IN_SQLITE, (table, column, existing, new)


def test_a_registry_with_a_foreign_schema_is_refused(tmp_path: Path) -> None:
    tmp_path.joinpath(REGISTRY_FILE).touch()
    with sqlite3.connect(tmp_path / REGISTRY_FILE) as conn:
        conn.execute("CREATE TABLE something (x)")
    with pytest.raises(NetinstallError, match="not a netinstall registry"):
        Registry.open(tmp_path)


def test_rows_are_read_in_the_tables_column_order() -> None:
    """rows.py reads profiles, events and repositories by position."""
    assert list(Profile.__dataclass_fields__) == rows.PROFILE_ORDER
    assert ["id", *Event.__dataclass_fields__] == rows.EVENT_ORDER
    assert rows.REPOSITORY_ORDER == ["version", "directory", "added"]
    fields = [f for f in Host.__dataclass_fields__ if f != "token"]
    expected = [*fields[:10], "token_sealed", "token_hash", *fields[10:]]
    assert [c.name for c in rows.HOST_COLUMNS] == expected


def test_head_is_the_newest_revision_shipped() -> None:
    """schema.HEAD lets an up-to-date registry open without Alembic: it must be the
    head of migrations/versions."""
    assert ScriptDirectory(str(SCRIPTS)).get_heads() == [HEAD]
