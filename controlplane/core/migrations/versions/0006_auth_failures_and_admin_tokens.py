"""Auth failures per client address (issue 17, finding 5) and admin API tokens with a role
(finding 10).

auth_failure_counts: refused credentials per address in the current window, shared by
replicas; admin_tokens: the HMAC, role and prefix of each admin API token, revoked on rotation.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 06:29:45.404390
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("admin_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admin_tokens_name"), ["name"], unique=False)

    op.create_table(
        "auth_failure_counts",
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("address"),
    )


def downgrade() -> None:
    op.drop_table("auth_failure_counts")
    with op.batch_alter_table("admin_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_tokens_name"))

    op.drop_table("admin_tokens")
