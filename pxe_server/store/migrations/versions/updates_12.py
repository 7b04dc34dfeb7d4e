"""Revision 0012, updates: the updates added, each host's state with each, and what each agent last
said of its updates (README "Updates"). The update key itself is made by the registry
when it is opened without one (``registry_updates``), so an existing server directory
gets it at its next start without a new ``server init``.

Written out, not taken from tables.py: a revision never changes once shipped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "updates",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("applies_to", sa.Text, nullable=False),
        sa.Column("reboot", sa.Boolean, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("metadata_sha256", sa.Text, nullable=False),
        sa.Column("added", sa.Float, nullable=False),
        sa.Column("added_by", sa.Text, nullable=False),
        sa.Column("cleaned", sa.Float),
    )
    op.create_table(
        "host_updates",
        sa.Column("mac", sa.Text, sa.ForeignKey("hosts.mac", ondelete="CASCADE"), primary_key=True),
        sa.Column("update_id", sa.Text, sa.ForeignKey("updates.id"), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("reboot_policy", sa.Text, nullable=False),
        sa.Column("boot_id", sa.Text),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_index("host_updates_by_update", "host_updates", ["update_id", "state"])
    op.create_table(
        "update_facts",
        sa.Column("mac", sa.Text, sa.ForeignKey("hosts.mac", ondelete="CASCADE"), primary_key=True),
        sa.Column("updates", sa.Text, nullable=False),
        sa.Column("free_mib", sa.BigInteger),
        sa.Column("boot_id", sa.Text),
        sa.Column("seen", sa.Float, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the registry is never migrated down")
