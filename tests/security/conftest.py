"""Fixtures for the security tests: real control planes, and clients from distinct addresses."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from controlplane.core.db import make_engine
from tests.controlplane.console.server import ConsoleServer, running_console, start_console_server

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_addresses = itertools.count(10)


def new_address() -> str:
    """A loopback address no other test of this session connects from (127.0.0.10, ...)."""
    number = next(_addresses)
    return f"127.0.{number // 250}.{number % 250 + 2}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    with running_console(tmp_path_factory) as running:
        yield running


def postgres_schema() -> tuple[Engine, str]:
    schema = f"security_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    return admin, schema


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ConsoleServer]]:
    """Two control planes on one database, as two replicas behind a load balancer."""
    admin: Engine | None = None
    if request.param == "postgresql":
        admin, schema = postgres_schema()
        database_url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    else:
        database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    running = [
        start_console_server(tmp_path / f"replica{n}", database_url=database_url) for n in (1, 2)
    ]
    yield running
    for replica in running:
        replica.stop()
    if admin is not None:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
