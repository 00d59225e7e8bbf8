"""installer_event_imports: the ids of installer events already imported into the chain.

Kept outside the chain so that `audit prune` cannot let old events in again. Created empty: the
first import records the ids of the events still in the chain (audit/installer_events.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 04:08:28.633838
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "installer_event_imports",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )


def downgrade() -> None:
    op.drop_table("installer_event_imports")
