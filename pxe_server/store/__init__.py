"""The registry's storage: SQLite or PostgreSQL through SQLAlchemy Core (SPEC §9).

``tables``: the tables, declared once. ``engine``: where the registry lives (the server
directory's ``database-url``, else ``DIR/registry.sqlite``), the engine and its
connections, transactions, and what only SQLite has (WAL checkpoints, VACUUM).
``schema``: migrations, the hand-written ones of SQLite registries up to schema 8
(``pxe_server.migrations``), then Alembic's (``migrations/versions``). ``rows``: rows
to model values and back.
"""
