"""Named pools (a master and its members, in order) and server-side jobs with a lease.

Written out, not taken from tables.py: a revision never changes once shipped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "pool_hosts",
        sa.Column("mac", sa.Text, sa.ForeignKey("hosts.mac"), primary_key=True),
        sa.Column("pool", sa.Text, sa.ForeignKey("pools.name"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_index("pool_hosts_by_pool", "pool_hosts", ["pool", "position"], unique=True)
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("pool", sa.Text),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("hosts", sa.Text, nullable=False),
        sa.Column("started_by", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("started", sa.Float),
        sa.Column("ended", sa.Float),
        sa.Column("reason", sa.Text),
        sa.Column("lease_holder", sa.Text),
        sa.Column("lease_until", sa.Float),
        sa.Column("cancel_requested", sa.Text),
        sa.Column("log", sa.Text, nullable=False, server_default="[]"),
        sa.Column("log_count", sa.Integer, nullable=False, server_default="0"),
        sqlite_autoincrement=True,
    )
    op.create_index("jobs_by_state", "jobs", ["state", "id"])


def downgrade() -> None:
    raise NotImplementedError("the registry is never migrated down")
