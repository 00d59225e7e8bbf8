"""Fixtures that build real audit stores: SQLite files and PostgreSQL schemas (one per test)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

import controlplane.audit.models  # noqa: F401  (registers the tables)
from controlplane.audit import AuditWriter, install_guards
from controlplane.core.db import Base, make_engine
from tests.controlplane.audit.rsyslog import Rsyslog

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def sqlite_store(directory: Path) -> Engine:
    engine = make_engine(f"sqlite:///{directory / 'audit.db'}")
    Base.metadata.create_all(engine)
    install_guards(engine)
    return engine


def pg_schema_engine(schema: str) -> Engine:
    engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    return engine


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_store(tmp_path)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema with the audit tables and guards; dropped afterwards."""
    schema = f"audit_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine = pg_schema_engine(schema)
    Base.metadata.create_all(engine)
    install_guards(engine)
    engine.dispose()
    yield schema
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture
def pg_engine(pg_schema: str) -> Iterator[Engine]:
    engine = pg_schema_engine(pg_schema)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Engine:
    """The test runs twice: on a SQLite file and on a PostgreSQL schema."""
    fixture = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    found: Engine = request.getfixturevalue(fixture)
    return found


@pytest.fixture
async def audit(engine: Engine, tmp_path: Path) -> AsyncIterator[AuditWriter]:
    """A writer on `engine` (both backends) that checkpoints every 7 entries."""
    writer = AuditWriter(engine, tmp_path / "audit-signing.key", checkpoint_every=7)
    await writer.start()
    yield writer
    await writer.close()


@pytest.fixture
async def writer(sqlite_engine: Engine, tmp_path: Path) -> AsyncIterator[AuditWriter]:
    audit = AuditWriter(sqlite_engine, tmp_path / "audit-signing.key", checkpoint_every=10)
    await audit.start()
    yield audit
    await audit.close()


@pytest.fixture(scope="session")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    """One real rsyslog for the whole session (its TCP, TLS and UDP inputs)."""
    server = Rsyslog(tmp_path_factory.mktemp("rsyslog"))
    server.start()
    yield server
    server.stop()
