"""Console sign-in with the site's directory, and sign-in throttling by address.

admin_users gains where an account comes from (local, ldap, oidc), its directory identity and
the address of its last sign-in (nullable: existing accounts are local); oidc_logins holds one
pending OpenID Connect sign-in (state, nonce, PKCE verifier; hashed, deleted on first use);
signin_failures counts failed sign-ins per address and address + account.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 03:51:26.707491
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oidc_logins",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("browser_hash", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("next_path", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("state_hash"),
    )
    op.create_table(
        "signin_failures",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=128), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("scope", "address", "account"),
    )
    with op.batch_alter_table("admin_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_signin_address", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("source", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("external_id", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("admin_users", schema=None) as batch_op:
        batch_op.drop_column("external_id")
        batch_op.drop_column("source")
        batch_op.drop_column("last_signin_address")

    op.drop_table("signin_failures")
    op.drop_table("oidc_logins")
