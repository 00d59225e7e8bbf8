"""Fixtures for the console tests: a real SQLite database with every table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from controlplane.core.db import init_db, make_engine, session_factory
from tests.controlplane.console.appliance import lay_out_appliance
from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.server import ConsoleServer, start_console_server


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'console.db'}")
    init_db(engine)
    with session_factory(engine)() as session:
        yield session
    engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    layout = lay_out_appliance(tmp_path_factory.mktemp("appliance"))
    running = start_console_server(layout.controlplane_data)
    yield running
    running.stop()


@pytest.fixture
def admin(server: ConsoleServer) -> Iterator[ConsoleClient]:
    name, password = server.add_user("admin")
    client = ConsoleClient(server.url)
    assert client.signin(name, password).status_code == 303
    yield client
    client.close()


@pytest.fixture
def auditor(server: ConsoleServer) -> Iterator[ConsoleClient]:
    name, password = server.add_user("auditor")
    client = ConsoleClient(server.url)
    assert client.signin(name, password).status_code == 303
    yield client
    client.close()


@pytest.fixture
def anonymous(server: ConsoleServer) -> Iterator[ConsoleClient]:
    client = ConsoleClient(server.url)
    yield client
    client.close()
