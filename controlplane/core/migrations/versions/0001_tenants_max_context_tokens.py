"""tenants.max_context_tokens: a cap on one request's prompt + completion tokens.

Nullable without a default (existing tenants get no cap), so SQLite adds it in place too.
It was step 0001_tenants_max_context_tokens of the runner Alembic replaced.

Revision ID: 0001
Revises: 0000
Create Date: 2026-12-06 03:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = "0000"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.add_column(sa.Column("max_context_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.drop_column("max_context_tokens")
