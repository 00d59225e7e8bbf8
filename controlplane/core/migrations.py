"""Schema migrations: an ordered list of named steps, each applied once, recorded in a table.

`Base.metadata.create_all` creates missing tables but never changes an existing one, so a new
column on an installed appliance needs a step here. `migrate` runs at every start (`init_db`):

- under a lock (PostgreSQL: a transaction-scoped advisory lock, so replicas starting together
  take turns; SQLite: `BEGIN IMMEDIATE`, the database's write lock), in one transaction with the
  table creation, so a failed step leaves the database as it was;
- a database with none of our tables is created at head by `create_all` and every step is only
  recorded (stamped), never run;
- a database from before migrations existed (tables, but no `schema_migrations`) is at the
  baseline: every step runs;
- otherwise the steps not yet recorded run, in order. The steps run *before* `create_all`, so a
  table that is missing altogether is created at head and its steps skip it.

Add a step by appending to `STEPS` (never reorder or rename one that has shipped) and change
the model in the same commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, String, inspect, select
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.core.db import Base, UtcDateTime, advisory_lock_key, utcnow

log = logging.getLogger(__name__)

# Not the audit chain's key: a start that migrates must not wait for the audit writer.
MIGRATION_LOCK_KEY = advisory_lock_key("sparkplane.schema.migrations")


class SchemaMigration(Base):
    """One row per step applied (or stamped, on a database created at head)."""

    __tablename__ = "schema_migrations"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


@dataclass(frozen=True)
class Step:
    name: str
    apply: Callable[[Connection], None]


def add_column(table: str, column: str, sql_type: str) -> Callable[[Connection], None]:
    """ALTER TABLE ... ADD COLUMN for a nullable column (no default: no table rewrite)."""

    def apply(conn: Connection) -> None:
        inspector = inspect(conn)
        if not inspector.has_table(table):
            return  # created at head by create_all
        if column in {c["name"] for c in inspector.get_columns(table)}:
            return  # already there (e.g. a database made by create_all without this table)
        # Identifiers and types are constants of STEPS, never input.
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")

    return apply


STEPS: list[Step] = [
    Step("0001_tenants_max_context_tokens", add_column("tenants", "max_context_tokens", "INTEGER")),
    Step("0002_admin_users_source", add_column("admin_users", "source", "VARCHAR(16)")),
    Step("0003_admin_users_external_id", add_column("admin_users", "external_id", "VARCHAR(512)")),
    Step(
        "0004_admin_users_last_signin_address",
        add_column("admin_users", "last_signin_address", "VARCHAR(64)"),
    ),
]


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _pending(conn: Connection, steps: list[Step]) -> tuple[list[Step], bool]:
    """(steps to run, whether the database is new): read under the lock."""
    tables = set(inspect(conn).get_table_names())
    if SchemaMigration.__tablename__ not in tables:
        ours = tables & set(Base.metadata.tables)
        return ([] if not ours else list(steps)), not ours
    done = set(conn.scalars(select(SchemaMigration.name)))
    return [step for step in steps if step.name not in done], False


def migrate(engine: Engine, steps: list[Step] | None = None) -> list[str]:
    """Bring the database to head; returns the names of the steps run now (empty: no-op)."""
    steps = STEPS if steps is None else steps
    with engine.connect() as conn:
        _lock(conn)
        try:
            to_run, fresh = _pending(conn, steps)
            table = Base.metadata.tables[SchemaMigration.__tablename__]
            table.create(conn, checkfirst=True)
            for step in to_run:
                log.info("database migration %s", step.name)
                step.apply(conn)
            Base.metadata.create_all(conn)
            known = set(conn.scalars(select(SchemaMigration.name)))
            recorded = [s.name for s in steps if s.name not in known]
            if recorded:
                conn.execute(
                    table.insert(),
                    [{"name": name, "applied_at": utcnow()} for name in recorded],
                )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    if fresh:
        log.info("database created at schema head (%d steps stamped)", len(steps))
    return [step.name for step in to_run]
