"""Bring a registry's schema up to date: the hand-written SQLite migrations, then Alembic.

A registry made before Alembic (SQLite, a ``schema_version`` row, migrations 1..8 of
``pxe_server.migrations``) is brought to schema 8 by those migrations as before, then
stamped with Alembic's baseline revision, which is schema 8 (not created again). A new
registry, SQLite or PostgreSQL, is created by the baseline. Alembic's revisions after
it apply to both. ``schema_version`` then holds ``ALEMBIC_MARK``: a release from before
Alembic refuses the registry ("a newer schema") instead of misreading it.

Alembic runs from the package's own script directory (``migrations/``: ``env.py`` and
``versions/``, shipped as package data), on the registry's connection and inside its
write transaction: no alembic.ini to find, nothing committed half-way.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import cast

from sqlalchemy import Column, Connection, MetaData, String, Table, insert, inspect, select, update

from common.errors import NetinstallError
from pxe_server import migrations as legacy
from pxe_server.store.engine import Store
from pxe_server.store.tables import schema_version

log = logging.getLogger("netinstall.registry")
# Alembic's own INFO lines (its context, each revision) are not an operator's concern;
# the registry logs what it migrated.
logging.getLogger("alembic").setLevel(logging.WARNING)

SCRIPTS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0008"  # Alembic's first revision: schema 8 of the hand-written migrations
HEAD = "0012"  # Alembic's newest revision (a test checks it against migrations/versions)
ALEMBIC_MARK = legacy.LATEST + 1  # schema_version once Alembic manages the registry
# Alembic's own table, read without Alembic: a registry at HEAD opens without importing
# it (its import costs a server about 20 MiB and the CLI tens of milliseconds).
_alembic_version = Table(
    "alembic_version", MetaData(), Column("version_num", String(32), primary_key=True)
)


def _newer(where: str, what: str) -> NetinstallError:
    return NetinstallError(
        f"the registry {where} has {what}, newer than this netinstall understands; "
        "upgrade netinstall"
    )


def migrate(conn: Connection, store: Store) -> str | None:
    """Bring the registry on ``conn`` up to date inside the caller's write transaction;
    what was done, for the log (None: nothing). A registry of a newer netinstall is
    refused rather than misread."""
    store.lock_schema(conn)
    tables = set(inspect(conn).get_table_names())
    if _alembic_version.name in tables and schema_version.name in tables:
        current = {row[0] for row in conn.execute(select(_alembic_version.c.version_num))}
        marked = conn.execute(select(schema_version.c.version)).scalar()
        if current == {HEAD} and marked == ALEMBIC_MARK:
            return None
    return _migrate(conn, store)


def _migrate(conn: Connection, store: Store) -> str | None:
    # Imported only when a registry is not at HEAD (see _alembic_version).
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config  # noqa: PLC0415
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415
    from alembic.script import ScriptDirectory  # noqa: PLC0415
    from alembic.util.exc import CommandError  # noqa: PLC0415

    script = ScriptDirectory(str(SCRIPTS))
    heads = set(script.get_heads())
    current = set(MigrationContext.configure(conn).get_current_heads())
    tables = set(inspect(conn).get_table_names())
    marked = None
    if schema_version.name in tables:
        marked = conn.execute(select(schema_version.c.version)).scalar()
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:
            raise _newer(store.where, f"schema revision {revision}") from None
    if marked is not None and marked > ALEMBIC_MARK:
        raise _newer(store.where, f"schema version {marked}")
    config = Config(attributes={"connection": conn})
    config.set_main_option("script_location", str(SCRIPTS))
    done = None
    if not current and schema_version.name in tables:
        # Made before Alembic: only SQLite registries were.
        if not store.sqlite:
            raise NetinstallError(
                f"the registry {store.where} has a schema_version table but no Alembic "
                "revision: it was not made by netinstall"
            )
        if marked is not None and marked > legacy.LATEST:
            raise _newer(store.where, f"schema version {marked}")
        raw = cast(sqlite3.Connection, conn.connection.dbapi_connection)
        legacy.migrate(raw, store.directory)
        command.stamp(config, BASELINE)
        current = {BASELINE}
        done = f"schema {marked or 0} migrated to {legacy.LATEST} and stamped {BASELINE}"
    elif not current and tables:
        raise NetinstallError(
            f"{store.where} holds tables but no registry schema: it is not a netinstall "
            "registry (or another program's database)"
        )
    if current != heads:
        command.upgrade(config, "head")
        step = f"Alembic {', '.join(sorted(current)) or 'none'} -> {', '.join(sorted(heads))}"
        done = step if done is None else f"{done}; {step}"
    if marked != ALEMBIC_MARK:
        found = conn.execute(update(schema_version).values(version=ALEMBIC_MARK))
        if found.rowcount == 0:
            conn.execute(insert(schema_version).values(version=ALEMBIC_MARK))
    return done
