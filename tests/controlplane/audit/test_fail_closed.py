"""Fail closed: an unwritable store makes `record` raise and `healthy` false; recovery is automatic.

Every store here is really unwritable: a full tmpfs, a read-only bind mount (both inside a
private mount namespace), a PostgreSQL server that is stopped, a terminated connection.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from controlplane.audit import AuditUnavailable, AuditWriter, install_guards
from controlplane.audit.verify import verify_live
from controlplane.core.db import Base, make_engine
from tests.controlplane.audit.conftest import PG_URL

REPO = Path(__file__).resolve().parents[3]
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


def run_unwritable(scenario: str, tmp_path: Path) -> dict:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    done = subprocess.run(
        ["unshare", "-m", sys.executable, "-m", "tests.controlplane.audit.unwritable_store",
         scenario, str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_disk_full_refuses_then_recovers_by_itself(tmp_path):
    result = run_unwritable("disk-full", tmp_path)
    assert result["before"] == "ok 1"
    assert "database or disk is full" in result["full"]
    assert result["healthy_when_full"] is False and "disk is full" in result["last_error"]
    assert result["recovered_after_s"] < 5 and result["after"] == "ok 2"
    assert result["verify"]["valid"] and result["verify"]["entries"] == 2


def test_disk_full_keeps_entries_nobody_waits_for_and_writes_them_in_order(tmp_path):
    # Queued audit: the answers went out when the entries were accepted, so a full disk must
    # not lose them; a caller who waits (an admin change) is told at once instead.
    result = run_unwritable("disk-full-kept", tmp_path)
    assert "disk is full" in result["last_error"], result
    assert 1 < result["failed_at"] < 200
    assert result["waiting_caller"].startswith("unavailable: audit store unavailable")
    assert result["pending_while_full"] == 210
    assert result["recovered_after_s"] < 5
    assert result["seqs"] == list(range(1, 211))
    assert result["ns"] == list(range(210))  # every entry once, in the order accepted
    assert result["verify"]["valid"] and result["verify"]["entries"] == 210


def test_read_only_store_refuses_then_recovers_by_itself(tmp_path):
    result = run_unwritable("read-only", tmp_path)
    assert result["healthy_at_start"] is False and result["last_error"]
    assert result["read_only"].startswith("unavailable: audit store unavailable")
    assert result["recovered_after_s"] < 5 and result["after"] == "ok 1"
    assert result["verify"]["valid"]


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Callable[[str], None]]]:
    """A private PostgreSQL server that the test can stop and start for real."""
    if PG_BIN is None or shutil.which("runuser") is None:
        pytest.skip("needs the PostgreSQL server binaries and runuser")
    home = Path(tempfile.mkdtemp(prefix="sparkplane-pg-"))  # pytest's tmp dirs are root-only
    home.chmod(0o755)
    shutil.chown(home, "postgres", "postgres")
    data = home / "data"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def pg_ctl(*args: str) -> None:
        # Output goes to a log file: the server inherits pipes and would keep them open.
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data),
                        "-l", str(home / "server.log"), "-w", "-t", "30", *args],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)  # fmt: skip

    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data),
                    "-A", "trust", "-U", "postgres"], check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl("-o", options, "start")

    def control(action: str) -> None:
        pg_ctl(*(("-o", options, "start") if action == "start" else ("-m", "fast", "stop")))

    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", control
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data),
                    "-m", "immediate", "stop"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)  # fmt: skip
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.postgres
@pytest.mark.slow
async def test_postgres_down_refuses_then_recovers_by_itself(own_postgres, tmp_path):
    url, control = own_postgres
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    install_guards(engine)
    audit = AuditWriter(engine, tmp_path / "audit-signing.key")
    await audit.start()
    assert await audit.record("api.request", n=1) == 1
    await asyncio.to_thread(control, "stop")
    with pytest.raises(AuditUnavailable):
        await audit.record("api.request", n=2)
    assert not audit.healthy and audit.last_error
    with pytest.raises(AuditUnavailable, match="unavailable"):  # fails fast while down
        await audit.record("api.request", n=3)
    await asyncio.to_thread(control, "start")
    for _ in range(100):
        if audit.healthy:
            break
        await asyncio.sleep(0.1)
    assert audit.healthy and audit.last_error is None
    assert await audit.record("api.request", n=4) == 2
    await audit.close()
    assert verify_live(engine, [tmp_path / "audit-signing.pub"]).valid
    engine.dispose()


@pytest.mark.postgres
async def test_terminated_connection_fails_its_batch_then_recovers(pg_schema, tmp_path):
    name = f"audit-test-{uuid.uuid4().hex[:8]}"  # only this writer's session gets terminated
    engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={pg_schema}",
                                               "application_name": name})  # fmt: skip
    audit = AuditWriter(engine, tmp_path / "audit-signing.key")
    await audit.start()
    await audit.record("api.request", n=1)
    admin = make_engine(PG_URL)
    with admin.connect() as conn:
        killed = conn.execute(
            text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                 "WHERE application_name = :name"), {"name": name}
        ).scalar()  # fmt: skip
    admin.dispose()
    assert killed >= 1
    with pytest.raises(AuditUnavailable, match="unavailable"):
        await audit.record("api.request", n=2)
    for _ in range(100):
        if audit.healthy:
            break
        await asyncio.sleep(0.1)
    assert await audit.record("api.request", n=3) == 2
    await audit.close()
    assert verify_live(engine, [tmp_path / "audit-signing.pub"]).valid
    engine.dispose()
