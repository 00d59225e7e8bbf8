"""tenants.system: the appliance's own tenant (`sparkplane validate`, the upgrade health check).

Not null with a server default of false, so existing tenants are ordinary ones and SQLite adds
the column in place.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.add_column(
            sa.Column("system", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.drop_column("system")
