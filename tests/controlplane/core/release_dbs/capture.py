"""Capture the database a released control plane leaves behind, for the upgrade tests.

Run with the *release's* code first on the path (not this work tree's), e.g. for 0.1.0:

    git archive 99f9877 controlplane | tar -x -C /tmp/release-0.1.0
    cd tests/controlplane/core/release_dbs
    PYTHONPATH=/tmp/release-0.1.0:../../../.. ../../../../.venv/bin/python capture.py 0.1.0 0.1.0

It starts that release's real gateway (its own start-up migrates and creates the tables), makes
tenants, keys, chat requests (usage rows, audit entries) and admin changes through its API and
CLI functions, signs a checkpoint, and writes for each backend `dump.sql` (the database as SQL:
`iterdump` for SQLite, `pg_dump --inserts` for PostgreSQL), the data directory's keys (so the
upgraded chain can be verified and continued) and the secret of one API key (`api-key`). The
data is made up; the keys are test keys.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine

import controlplane
from controlplane.audit import AuditWriter
from controlplane.console import users
from controlplane.core.db import make_engine
from controlplane.tenancy import actions
from tests.controlplane.harness import REPO_ROOT, ThreadGateway, make_settings
from tests.enginesim import start_simulator

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
KEPT_FILES = ("audit-signing.key", "audit-signing.pub", "pepper")


def exercise(data_dir: Path, database_url: str, sim_url: str) -> str:
    """What an appliance does in its first days, through the release's own code paths.

    Returns the secret of acme's key, so a test can make a request with it after the upgrade.
    """
    settings = make_settings(data_dir, [sim_url], database_url=database_url)
    gateway = ThreadGateway(settings)
    try:
        with gateway.admin() as admin:
            for body in (
                {"name": "acme", "max_concurrency": 4, "weight": 2.0, "rpm": 600,
                 "max_context_tokens": 4096, "allowed_models": ["sim-model"]},
                {"name": "globex", "tpm": 100000, "daily_tokens": 5000000,
                 "monthly_tokens": 90000000, "max_tokens": 512, "capture_content": True,
                 "queue_size": 8, "queue_timeout": 2.5, "retention_days": 30},
            ):  # fmt: skip
                admin.post("/api/tenants", json=body).raise_for_status()
            keys = [admin.post("/api/keys", json={"tenant": t}).json() for t in ("acme", "globex")]
            spare = admin.post("/api/keys", json={"tenant": "acme", "name": "old"}).json()
            admin.post(f"/api/keys/{spare['id']}/revoke").raise_for_status()
            admin.patch("/api/tenants/globex", json={"max_tokens": 256}).raise_for_status()
        for key in keys:
            for n in range(3):
                response = httpx.post(
                    f"{gateway.url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key['key']}"},
                    json={"model": "sim-model", "max_tokens": 8 + n,
                          "messages": [{"role": "user", "content": f"hello {n}"}]},
                    timeout=30,
                )  # fmt: skip
                response.raise_for_status()
    finally:
        gateway.stop()
    # The shell side: the CLI's admin context (its own start-up), a console user, a checkpoint.
    actions.create_tenant(settings, "initech", rpm=60)
    actions.update_tenant(settings, "initech", disabled=True)

    async def shell_side() -> None:
        async with actions.admin_context(settings, actor="cli:capture") as ctx:
            await users.create_user(ctx, "alice", "admin")
        engine = make_engine(database_url)
        writer = AuditWriter(engine, data_dir / "audit-signing.key")
        await writer.start()
        await writer.checkpoint_now()
        await writer.close()
        engine.dispose()

    asyncio.run(shell_side())
    return str(keys[0]["key"])


def dump_sqlite(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return "\n".join(conn.iterdump()) + "\n"


def dump_postgres(database: str) -> str:
    out = subprocess.run(
        ["pg_dump", "--no-owner", "--no-privileges", "--inserts", "-h", "127.0.0.1",
         "-U", "postgres", database],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    # Only SQL: psql meta-commands (\restrict of newer pg_dump) cannot run through a driver.
    return "".join(line for line in out.splitlines(keepends=True) if not line.startswith("\\"))


def capture(version: str, out: Path) -> None:
    sim = start_simulator(max_num_seqs=8, time_scale=0.01, models="sim-model")
    server = create_engine(PG_SERVER + "/test", isolation_level="AUTOCOMMIT")
    try:
        for backend in ("sqlite", "postgresql"):
            with tempfile.TemporaryDirectory() as tmp:
                data_dir = Path(tmp) / "data"
                if backend == "sqlite":
                    secret = exercise(data_dir, f"sqlite:///{data_dir / 'sparkplane.db'}", sim.url)
                    dump = dump_sqlite(data_dir / "sparkplane.db")
                else:
                    database = f"capture_{uuid.uuid4().hex[:12]}"
                    with server.connect() as conn:
                        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
                    try:
                        secret = exercise(data_dir, f"{PG_SERVER}/{database}", sim.url)
                        dump = dump_postgres(database)
                    finally:
                        with server.connect() as conn:
                            conn.exec_driver_sql(f'DROP DATABASE "{database}" WITH (FORCE)')
                target = out / backend
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                (target / "dump.sql").write_text(dump, encoding="utf-8")
                (target / "api-key").write_text(secret + "\n", encoding="utf-8")
                for name in KEPT_FILES:
                    shutil.copy2(data_dir / name, target / name)
        (out / "RELEASE").write_text(f"{version}\n", encoding="utf-8")
    finally:
        server.dispose()
        sim.stop()


if __name__ == "__main__":
    version, out = sys.argv[1], Path(sys.argv[2])
    source = Path(controlplane.__file__).resolve()
    if source.is_relative_to(REPO_ROOT / "controlplane") or controlplane.__version__ != version:
        sys.exit(f"{source} ({controlplane.__version__}) is not the release {version}: see above")
    capture(version, out)
