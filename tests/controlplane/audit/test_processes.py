"""Real processes: kill -9 under load (SQLite), and two writers on one PostgreSQL chain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controlplane.audit.models import AuditEntry
from controlplane.audit.verify import verify_live
from tests.controlplane.audit.conftest import PG_URL, sqlite_store

REPO = Path(__file__).resolve().parents[3]


def start_writer(url: str, key: Path, count: int, schema: str | None = None) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "tests.controlplane.audit.writer_process",
        url,
        str(key),
        str(count),
    ]
    return subprocess.Popen(
        [*args, *([schema] if schema else [])], cwd=REPO, stdout=subprocess.PIPE, text=True
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    """(database URL, schema or None, engine) of a fresh audit store."""
    if request.param == "sqlite":
        engine = sqlite_store(tmp_path)
        yield f"sqlite:///{tmp_path / 'audit.db'}", None, engine
        engine.dispose()
    else:
        schema = request.getfixturevalue("pg_schema")
        yield PG_URL, schema, request.getfixturevalue("pg_engine")


@pytest.mark.slow
def test_kill_9_under_load_keeps_every_acknowledged_entry_and_the_chain(store, tmp_path):
    url, schema, engine = store
    key = tmp_path / "audit-signing.key"
    process = start_writer(url, key, 0, schema)
    acknowledged: list[int] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while len(acknowledged) < 3000 and time.monotonic() < deadline:
        acknowledged.append(int(process.stdout.readline()))
    os.kill(process.pid, signal.SIGKILL)  # mid-batch: entries are in flight
    process.wait()
    acknowledged += [int(line) for line in process.stdout.read().split()]  # printed before death
    assert len(acknowledged) >= 3000

    with engine.connect() as conn:
        stored = set(conn.execute(select(AuditEntry.seq)).scalars())
    assert set(acknowledged) <= stored  # nothing a client saw succeed was lost
    report = verify_live(engine, [key.with_suffix(".pub")])
    assert report.valid, report.as_dict()
    assert report.entries == len(stored) == max(stored)

    restarted = start_writer(url, key, 100, schema)  # restart: the chain continues from the head
    restarted.communicate(timeout=60)
    report = verify_live(engine, [key.with_suffix(".pub")])
    assert report.valid and report.entries == len(stored) + 100 and report.uncovered == 0


@pytest.mark.postgres
@pytest.mark.slow
def test_two_writer_processes_share_one_postgres_chain(pg_schema, pg_engine, tmp_path):
    key = tmp_path / "audit-signing.key"
    first = start_writer(PG_URL, key, 0, pg_schema)
    assert first.stdout is not None
    first.stdout.readline()  # the key exists now; both replicas share it
    second = start_writer(PG_URL, key, 1500, pg_schema)
    out_second, _ = second.communicate(timeout=120)
    os.kill(first.pid, signal.SIGTERM)
    out_first, _ = first.communicate(timeout=30)
    seqs = [int(s) for s in (out_first + out_second).split()]
    assert len(seqs) == len(set(seqs))  # no seq handed out twice
    with pg_engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(AuditEntry)).scalar()
        pids = conn.execute(select(AuditEntry.data)).scalars()
        writers = {bytes(data).split(b'"pid":')[1].split(b"}")[0] for data in pids}
    assert len(writers) == 2
    report = verify_live(pg_engine, [key.with_suffix(".pub")])
    assert report.valid and report.entries == count >= 1500, report.as_dict()
