"""The registry's Alembic revisions, oldest first: ``baseline_schema_8`` is the schema
the hand-written SQLite migrations end at. Append revisions; never edit a shipped one."""
