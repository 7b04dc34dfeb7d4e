"""Several servers: the servers of the registry, each host's segment server, and the
power requests one server leaves for another.

Written out, not taken from tables.py: a revision never changes once shipped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "servers",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    op.create_table(
        "host_segments",
        sa.Column("mac", sa.Text, sa.ForeignKey("hosts.mac", ondelete="CASCADE"), primary_key=True),
        sa.Column("server", sa.Text, nullable=False),
        sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_table(
        "power_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("mac", sa.Text, nullable=False),
        sa.Column("server", sa.Text, nullable=False),
        sa.Column("asked_by", sa.Text, nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("answer", sa.Text),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("answered", sa.Float),
        sqlite_autoincrement=True,
    )
    op.create_index("power_requests_by_server", "power_requests", ["server", "state", "id"])


def downgrade() -> None:
    raise NotImplementedError("the registry is never migrated down")
