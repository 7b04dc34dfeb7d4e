"""Baseline: schema 8, where the hand-written SQLite migrations (pxe_server.migrations) end.

A new registry (SQLite or PostgreSQL) is created by this revision; an older SQLite one is
brought to schema 8 by the hand-written migrations and stamped with it (not created
again). Written out, not taken from tables.py: a revision never changes once shipped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    version = op.create_table("schema_version", sa.Column("version", sa.Integer, nullable=False))
    op.create_table(
        "settings",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "secrets",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "profiles",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("boot_chain", sa.Text, nullable=False),
        sa.Column("xen_args", sa.Text, nullable=False),
        sa.Column("kernel_args", sa.Text, nullable=False),
        sa.Column("payload_version", sa.Text),
        sa.Column("san_boot", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("multipath", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("storage_nic", sa.Text, nullable=False, server_default="net1"),
    )
    op.create_table(
        "hosts",
        sa.Column("mac", sa.Text, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("profile", sa.Text, sa.ForeignKey("profiles.name"), nullable=False),
        sa.Column("variables", sa.Text, nullable=False, server_default="{}"),
        sa.Column("netboot_armed", sa.Boolean, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("step", sa.Text),
        sa.Column("progress", sa.Float),
        sa.Column("assigned_version", sa.Text),
        sa.Column("running_version", sa.Text),
        sa.Column("token_sealed", sa.Text),
        sa.Column("token_hash", sa.Text, unique=True),
        sa.Column("agent_credential_hash", sa.Text, unique=True),
        sa.Column("facts", sa.Text, nullable=False, server_default="{}"),
        sa.Column("work", sa.Text),
        sa.Column("reboot_policy", sa.Text, nullable=False, server_default="auto"),
        sa.Column("last_checkin", sa.Float),
        sa.Column("san", sa.Text),
        sa.Column("install_key_hash", sa.Text),
        sa.Column("enrolled_from", sa.Text),
        sa.Column("enrolled_at", sa.Float),
        sa.Column("ticket_issued_at", sa.Float),
        sa.Column("token_expires", sa.Float),
        sa.Column("conflict", sa.Text),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("event_count", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("hosts_by_install_key", "hosts", ["install_key_hash"], unique=True)
    op.create_index("hosts_by_profile", "hosts", ["profile"])
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("mac", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("step", sa.Text),
        sa.Column("progress", sa.Float),
        sa.Column("message", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("events_by_mac", "events", ["mac", "id"])
    op.create_table(
        "repositories",
        sa.Column("version", sa.Text, primary_key=True),
        sa.Column("directory", sa.Text, nullable=False),
        sa.Column("added", sa.Float, nullable=False),
    )
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(counters, [{"name": "revision", "value": 0}])
    op.bulk_insert(version, [{"version": 8}])


def downgrade() -> None:
    raise NotImplementedError("the registry is never migrated down")
