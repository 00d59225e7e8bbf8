"""The one start-up of the database and its audit writer.

`sparkplane serve` (the application's lifespan), the admin commands (`tenants`, `keys`,
`admins`, `demo`) and `sparkplane audit` all open the database here, so each creates or
upgrades the same tables, installs the same append-only guards and signs with the same key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Engine

from controlplane.audit.guards import install_guards
from controlplane.audit.writer import AuditWriter
from controlplane.core.config import Settings
from controlplane.core.db import init_db, make_engine

AUDIT_KEY_FILE = "audit-signing.key"  # in the data directory, next to its public half (.pub)


@dataclass(frozen=True)
class AuditedDatabase:
    engine: Engine
    audit: AuditWriter


def prepare_database(settings: Settings, engine: Engine) -> None:
    """Create the data directory if missing, the tables (or bring them up to date) and the
    audit tables' append-only guards."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    init_db(engine)
    install_guards(engine)


def open_database(settings: Settings) -> Engine:
    """The database of `settings`, prepared (`prepare_database`). The caller disposes of it."""
    engine = make_engine(settings.database_url)
    try:
        prepare_database(settings, engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


@asynccontextmanager
async def audit_writer(engine: Engine, settings: Settings) -> AsyncIterator[AuditWriter]:
    """The started audit writer of `engine`, signing with the data directory's key; on exit it
    commits what it has queued, signs a final checkpoint and stops."""
    writer = AuditWriter(engine, settings.data_dir / AUDIT_KEY_FILE)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


@asynccontextmanager
async def audited_database(settings: Settings) -> AsyncIterator[AuditedDatabase]:
    """`open_database` and its `audit_writer`; the database is closed after the writer."""
    engine = open_database(settings)
    try:
        async with audit_writer(engine, settings) as writer:
            yield AuditedDatabase(engine, writer)
    finally:
        engine.dispose()
