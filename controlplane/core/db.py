"""Database engine and the one declarative `Base` every table module shares."""

from __future__ import annotations

import hashlib
import importlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, TypeDecorator, create_engine, event, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from controlplane.core import migrations

# Table modules of every package: the metadata the migrations are checked against.
TABLE_MODULES = (
    "controlplane.tenancy.models",
    "controlplane.admission.pg_schema",
    "controlplane.audit.models",
    "controlplane.console.models",
    "controlplane.api.models",
)


class Base(DeclarativeBase):
    """All tables (tenants, keys, audit, console users) register on this metadata."""


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def advisory_lock_key(name: str) -> int:
    """A stable PostgreSQL advisory-lock key (positive bigint) for a named lock."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1


# Not the audit chain's key: a start that migrates must not wait for the audit writer.
MIGRATION_LOCK_KEY = advisory_lock_key("sparkplane.schema.migrations")


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL so readers never block the audit writer."""
    if database_url.startswith("sqlite"):
        engine = create_engine(
            database_url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash (kill -9), not a power cut.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if database_url.startswith("postgresql://"):
        # psycopg 3 is the driver this project ships; plain postgresql:// would pick psycopg2.
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
    return create_engine(database_url, pool_pre_ping=True, **kwargs)


def import_table_modules() -> None:
    for name in TABLE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only a missing module of its own is skipped; a broken import inside it is an error.
            if exc.name != name:
                raise


def init_db(engine: Engine) -> list[str]:
    """Bring every table to the schema head under the migration lock (idempotent).

    Returns the revisions run now (see core/migrations). One transaction: a failing revision
    leaves the database as it was. Replicas starting together take turns on the lock; the
    later ones find nothing to do.
    """
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Batch mode recreates tables; with foreign keys on, dropping the old `tenants`
            # would cascade. The pragma is a no-op inside a transaction: set it before.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            _lock_schema(conn)
            applied = migrations.upgrade(conn)
            if sqlite and applied and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                raise migrations.MigrationError("a migration left rows violating a foreign key")
            # The auth epoch row must exist before the first change: two first changes racing
            # to insert it would otherwise fail one of them with a unique-key error.
            conn.execute(
                text(
                    "INSERT INTO auth_epoch (id, value) SELECT 1, 0 WHERE NOT EXISTS "
                    "(SELECT 1 FROM auth_epoch WHERE id = 1)"
                )
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
    return applied


def _lock_schema(conn: Connection) -> None:
    """Take the migration lock for the rest of the transaction."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
