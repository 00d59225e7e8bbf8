"""A database written by a released control plane is upgraded in place by today's start-up.

`release_dbs/VERSION/BACKEND/` holds what that release's own gateway and CLI left behind
(captured by `release_dbs/capture.py` running the release's code): the database as SQL and the
data directory's keys. Loaded into a new SQLite file or a new PostgreSQL database, it must come
through `init_db` with every row as it was, the audit chain verifying and its guards holding,
and then serve: a key issued by the release authenticates and the chain grows, still valid.
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, inspect, text

from controlplane.audit import install_guards
from controlplane.audit.verify import verify_live
from controlplane.core import migrations
from controlplane.core.db import init_db, make_engine
from tests.controlplane.core.schema_checks import assert_audit_guards_hold, drift, stamped
from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle

RELEASES = Path(__file__).parent / "release_dbs"
Snapshot = dict[str, list[dict[str, Any]]]
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
DATA_FILES = {"audit-signing.key": 0o600, "audit-signing.pub": 0o644, "pepper": 0o600}
# The revision each release's schema is at (0.1.0's runner had run step 0001).
SCHEMA_OF = {"0.1.0": "0001"}
CASES = [
    pytest.param((version, backend), id=f"{version}-{backend}", marks=marks)
    for version in SCHEMA_OF
    for backend, marks in (("sqlite", ()), ("postgresql", pytest.mark.postgres))
]


@dataclass
class Release:
    version: str
    url: str
    data_dir: Path
    api_key: str


@pytest.fixture(params=CASES)
def release(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Release]:
    version, backend = request.param
    source = RELEASES / version / backend
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    for name, mode in DATA_FILES.items():  # git does not keep file modes the writer checks
        shutil.copyfile(source / name, data_dir / name)
        (data_dir / name).chmod(mode)
    dump = (source / "dump.sql").read_text(encoding="utf-8")
    api_key = (source / "api-key").read_text(encoding="utf-8").strip()
    if backend == "sqlite":
        path = data_dir / "sparkplane.db"
        with closing(sqlite3.connect(path)) as conn:
            conn.executescript(dump)
        yield Release(version, f"sqlite:///{path}", data_dir, api_key)
        return
    database = f"release_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as server:
        server.execute(f'CREATE DATABASE "{database}"')
        try:
            with psycopg.connect(f"{PG_SERVER}/{database}", autocommit=True) as conn:
                conn.execute(dump)  # no parameters: one simple-protocol script
            yield Release(version, f"{PG_SERVER}/{database}", data_dir, api_key)
        finally:
            server.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


def snapshot(engine: Engine, like: Snapshot | None = None) -> Snapshot:
    """Every row of every table but the migration bookkeeping, in a stable order.

    With `like`: only its tables and columns (a later revision may add some, empty: a table
    that is new and not empty is kept, so that the comparison shows it).
    """
    rows = {}
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            if table in {"alembic_version", migrations.LEGACY_TABLE}:
                continue
            result = conn.execute(text(f'SELECT * FROM "{table}"')).mappings()
            new_table = like is not None and table not in like
            keep = like[table][0] if like is not None and not new_table and like[table] else None
            found = [{k: v for k, v in row.items() if keep is None or k in keep} for row in result]
            if new_table and not found:
                continue
            rows[table] = sorted(found, key=lambda row: repr(sorted(row.items())))
    return rows


def chain_report(engine: Engine, data_dir: Path) -> Any:
    report = verify_live(engine, [data_dir / "audit-signing.pub"])
    assert report.valid, report.as_dict()
    return report


def test_a_released_database_is_upgraded_in_place(release: Release, sim: SimHandle) -> None:
    engine = make_engine(release.url)
    before = snapshot(engine)
    assert migrations.LEGACY_TABLE in inspect(engine).get_table_names()
    entries = chain_report(engine, release.data_dir).entries
    assert entries > 10 and before["tenants"] and before["usage_daily"]

    revisions = migrations.revisions()
    newer = revisions[revisions.index(SCHEMA_OF[release.version]) + 1 :]
    assert init_db(engine) == newer
    install_guards(engine)  # what every start does next
    assert snapshot(engine, like=before) == before  # every row of every table, unchanged
    assert stamped(engine) == migrations.head()
    assert migrations.LEGACY_TABLE not in inspect(engine).get_table_names()
    assert drift(engine) == []  # the upgraded schema is what the models declare
    assert chain_report(engine, release.data_dir).entries == entries
    assert_audit_guards_hold(engine)
    engine.dispose()

    # Today's gateway serves on it: the release's key and pepper authenticate, the chain grows.
    settings = make_settings(release.data_dir, [sim.url], database_url=release.url)
    gateway = ThreadGateway(settings)
    try:
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {release.api_key}"},
            json={"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    finally:
        gateway.stop()
    engine = make_engine(release.url)
    assert chain_report(engine, release.data_dir).entries > entries
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT sum(requests) FROM usage_daily")) > sum(
            row["requests"] for row in before["usage_daily"]
        )
    engine.dispose()
