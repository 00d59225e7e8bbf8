"""Alembic's environment script: runs the revisions on the connection `upgrade` hands it.

It never opens a connection of its own: `controlplane.core.db.init_db` has already taken the
lock (PostgreSQL advisory lock, SQLite `BEGIN IMMEDIATE`) and owns the transaction, so the
revisions, the version stamp and the caller's own statements commit or roll back together.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "run migrations through controlplane.core.db.init_db (it takes the lock) or "
        "`python -m controlplane.core.migrations`, not the bare alembic command"
    )
context.configure(
    connection=connection,
    # SQLite cannot ALTER most things: batch mode recreates the table (copy and move).
    render_as_batch=True,
    # SQLite DDL is transactional too; the caller's one transaction holds every revision.
    transactional_ddl=True,
    **config.attributes.get("configure", {}),
)
with context.begin_transaction():
    context.run_migrations()
