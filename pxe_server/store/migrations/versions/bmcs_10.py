"""A host's BMC for power control: its URL, its password sealed with the server
directory's key, how its certificate is verified.

Written out, not taken from tables.py: a revision never changes once shipped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "bmcs",
        sa.Column("mac", sa.Text, sa.ForeignKey("hosts.mac", ondelete="CASCADE"), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("password_sealed", sa.Text, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("ca_pem", sa.Text),
        sa.Column("insecure", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated", sa.Float, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the registry is never migrated down")
