"""Tenant limits max_n and allow_remote_media (issue 17 finding 1, issue 15 section 5).

max_n: the most choices (`n`) one request may ask for, 4 for existing tenants as for new ones.
allow_remote_media: whether a request may name media by remote URL; false for every tenant that
exists, so an upgrade opens nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 06:16:39.027844
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Server defaults fill the rows that exist; new rows get the model's default anyway.
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_n", sa.Integer(), nullable=False, server_default="4"))
        batch_op.add_column(
            sa.Column("allow_remote_media", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("allow_remote_media")
        batch_op.drop_column("max_n")
