"""Alembic's environment for the registry: always on the connection the registry gives
(``config.attributes["connection"]``), inside the registry's own write transaction
(Alembic then begins and commits nothing itself). ``pxe_server.store.schema`` runs it."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from pxe_server.store.tables import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise TypeError("the registry's migrations run through pxe_server.store.schema only")
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
