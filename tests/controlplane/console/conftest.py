"""Fixtures for the console tests: a real SQLite database with every table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from controlplane.core.db import init_db, make_engine, session_factory
from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.ldap_server import LdapServer, start_ldap_server
from tests.controlplane.console.oidc_server import OidcProvider, oidc_settings, start_oidc_provider
from tests.controlplane.console.server import ConsoleServer, free_port, running_console


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'console.db'}")
    init_db(engine)
    with session_factory(engine)() as session:
        yield session
    engine.dispose()


PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'console.db'}")
        init_db(engine)
        yield engine
        engine.dispose()
        return
    schema = f"console_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    init_db(engine)
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    with running_console(tmp_path_factory) as running:
        yield running


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


@pytest.fixture(scope="session")
def ldap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    """One real slapd for the whole session (tests add their own people)."""
    running = start_ldap_server(tmp_path_factory.mktemp("slapd"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """One real OpenID provider (oidc-provider under Node) for the whole session."""
    running = start_oidc_provider(tmp_path_factory.mktemp("oidc-provider"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def oidc_console(
    tmp_path_factory: pytest.TempPathFactory, oidc_provider: OidcProvider
) -> Iterator[ConsoleServer]:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    client = oidc_provider.register(f"{public}/console/oidc/callback", f"{public}/console/signin")
    settings = oidc_settings(oidc_provider, public, tmp_path_factory.mktemp("secrets"), client)
    with running_console(tmp_path_factory, port=port, **settings) as running:
        yield running
