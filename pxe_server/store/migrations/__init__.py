"""Alembic's script directory for the registry: ``env.py`` and ``versions/`` (package data,
run by ``pxe_server.store.schema``; no alembic.ini)."""
