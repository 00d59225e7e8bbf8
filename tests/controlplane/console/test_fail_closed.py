"""Fail closed: when the audit store refuses writes, the console refuses sign-ins and changes."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.server import PASSWORD, ConsoleServer, start_console_server

# A real fault in the real database: every write to the audit tables is aborted.
BREAK = [
    f"CREATE TRIGGER console_test_refuse_{table}_{op} BEFORE {op} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, 'audit store refuses writes (test fault)'); END"
    for table in ("audit_entries", "audit_health_probe") for op in ("INSERT", "UPDATE")
]  # fmt: skip


def _sql(database: Path, statements: list[str]) -> None:
    with sqlite3.connect(database, timeout=30) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ConsoleServer]:
    running = start_console_server(tmp_path / "data")
    yield running
    running.stop()


def test_console_refuses_when_audit_cannot_be_written(own_server: ConsoleServer) -> None:
    database = own_server.settings.data_dir / "sparkplane.db"
    name, _ = own_server.add_user("admin")
    admin = ConsoleClient(own_server.url)
    assert admin.signin(name, PASSWORD).status_code == 303
    token = admin.csrf()
    _sql(database, BREAK)
    # The first write that fails tells the writer the store is gone ...
    failed = admin.post("/tenants", {"name": "first"}, csrf=token)
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "audit_unavailable"
    # ... from then on changes are refused before anything is changed,
    refused = admin.post("/tenants", {"name": "second"}, csrf=token)
    assert refused.status_code == 503
    # ... and nobody can sign in unaudited.
    other = ConsoleClient(own_server.url)
    signin = other.signin(name, PASSWORD)
    assert signin.status_code == 503 and "sign-in is refused" in signin.text
    _sql(database, [f"DROP TRIGGER {s.split()[2]}" for s in BREAK])
    deadline = time.monotonic() + 10
    while other.signin(name, PASSWORD).status_code != 303:
        assert time.monotonic() < deadline, "the console did not recover"
        time.sleep(0.3)
    listed = admin.get("/tenants").text
    assert "second" not in listed
    # "first" was made before its entry failed: the change stayed, and so did its entry, kept
    # by the writer and written once the store was back. No change without its entry.
    assert "first" in listed
    deadline = time.monotonic() + 10
    while not [f for _, _, f in own_server.audit_entries("admin.tenant_create")
               if f.get("target") == "first"]:  # fmt: skip
        assert time.monotonic() < deadline, "the kept entry of 'first' was not written"
        time.sleep(0.3)
    admin.close()
    other.close()
