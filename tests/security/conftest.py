"""Fixtures for the security tests: real control planes, and clients from distinct addresses."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from controlplane.audit.models import AuditEntry
from controlplane.core.db import make_engine
from tests.controlplane.console.server import ConsoleServer, running_console, start_console_server
from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle, start_simulator

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


# ---- the gateway in front of the engine simulator (findings of the request path) ----------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator(max_num_seqs=16, time_scale=0.01, models="sim-model")
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def gateway(sim: SimHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadGateway]:
    running = ThreadGateway(make_settings(tmp_path_factory.mktemp("gw"), [sim.url]))
    yield running
    running.stop()


def audit_entries(data_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The fields of every audit entry of `kind` (with its `tenant`), in chain order."""
    engine = make_engine(f"sqlite:///{data_dir}/sparkplane.db")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(AuditEntry.tenant, AuditEntry.data)
                .where(AuditEntry.kind == kind)
                .order_by(AuditEntry.seq)
            ).all()
    finally:
        engine.dispose()
    return [{**(json.loads(data) if data else {}), "tenant": tenant} for tenant, data in rows]


def completions_of(gateway: ThreadGateway, tenant: str, count: int = 1) -> list[dict[str, Any]]:
    """The api.completion entries of a tenant's calls, once there are `count` (waits briefly:
    an entry may still be queued)."""
    deadline = time.monotonic() + 5
    while True:
        found = [
            entry
            for entry in audit_entries(gateway.settings.data_dir, "api.completion")
            if entry.get("tenant") == tenant
        ]
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"{len(found)} api.completion entries of {tenant}"
            return found
        time.sleep(0.05)


def admission_idle(gateway: ThreadGateway) -> bool:
    """No slot held, nobody queued: what every finished call must leave behind."""

    def idle() -> bool:
        states = gateway.state().admission.tenants.values()
        return all(state.in_flight == 0 and not state.queue for state in states)

    return bool(gateway.call_in_loop(idle))
