"""Content capture and usage per key and model.

audit_content: one sealed record per captured call (controlplane/audit/captured.py).
usage_daily: the key, the model and whether the counts are estimated join the primary key.
Rows from before have key 0 (unknown), model "" (unknown) and are not estimated; the table is
rebuilt (a primary key cannot be changed in place on SQLite) and its rows copied.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 06:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _usage_table(name: str, *, with_key: bool) -> None:
    keyed = ["key_id", "model", "estimated"] if with_key else []
    columns: list[sa.schema.SchemaItem] = [
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
    ]
    if with_key:
        columns += [
            sa.Column("key_id", sa.Integer(), nullable=False),
            sa.Column("model", sa.String(length=200), nullable=False),
            sa.Column("estimated", sa.Boolean(), nullable=False),
        ]
    columns += [
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "day", *keyed, name=f"{name}_pkey"),
    ]
    op.create_table(name, *columns)


def upgrade() -> None:
    op.create_table(
        "audit_content",
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index(op.f("ix_audit_content_created"), "audit_content", ["created"])
    op.create_index(op.f("ix_audit_content_tenant"), "audit_content", ["tenant"])
    _usage_table("usage_daily_0005", with_key=True)
    op.execute(
        "INSERT INTO usage_daily_0005 (tenant_id, day, key_id, model, estimated, requests, "
        "prompt_tokens, completion_tokens) SELECT tenant_id, day, 0, '', false, requests, "
        "prompt_tokens, completion_tokens FROM usage_daily"
    )
    op.drop_table("usage_daily")
    op.rename_table("usage_daily_0005", "usage_daily")


def downgrade() -> None:
    _usage_table("usage_daily_0004", with_key=False)
    op.execute(
        "INSERT INTO usage_daily_0004 (tenant_id, day, requests, prompt_tokens, "
        "completion_tokens) SELECT tenant_id, day, "
        "sum(requests), sum(prompt_tokens), sum(completion_tokens) FROM usage_daily "
        "GROUP BY tenant_id, day"
    )
    op.drop_table("usage_daily")
    op.rename_table("usage_daily_0004", "usage_daily")
    op.drop_index(op.f("ix_audit_content_tenant"), table_name="audit_content")
    op.drop_index(op.f("ix_audit_content_created"), table_name="audit_content")
    op.drop_table("audit_content")
