"""The audit trail's scheduled jobs: the SIEM feed's shared cursor and the retention runs.

audit_feed_cursors: how far the feed has delivered the chain (entries and checkpoints), shared
by replicas; audit_retention_runs: one row per run of the daily retention job (the console
shows the last one and when the next is due).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 04:16:27.846722
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_feed_cursors",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "entry_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "checkpoint_size", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "audit_retention_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cut", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("redacted", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_retention_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_retention_runs_finished"), ["finished"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_retention_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_retention_runs_finished"))

    op.drop_table("audit_retention_runs")
    op.drop_table("audit_feed_cursors")
