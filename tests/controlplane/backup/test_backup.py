"""`sparkplane backup` while a real `sparkplane serve` answers, `sparkplane restore` onto the
stopped appliance, on SQLite and on the real PostgreSQL (pg_dump/pg_restore/psql 15)."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner, Result

from controlplane.audit.models import AuditEntry
from controlplane.core.config import Settings, load_settings
from controlplane.core.db import make_engine
from controlplane.tenancy import actions
from installer.cli.main import build_app
from tests.controlplane.harness import ProcessGateway, free_port
from tests.enginesim import SimHandle, start_simulator

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
CLI = build_app(["controlplane.cli.backup", "controlplane.cli.audit"])


@dataclass
class Appliance:
    env: dict[str, str]
    data_dir: Path
    schema: str | None = None

    @property
    def settings(self) -> Settings:
        return load_settings(None, **{k.removeprefix("SPARKPLANE_").lower(): v
                                      for k, v in self.env.items()})  # fmt: skip

    def cli(self, *args: str) -> Result:
        """`sparkplane ARGS` in this process (the server under test is another one)."""
        unset = {k: None for k in os.environ if k.startswith("SPARKPLANE_")}
        return CliRunner().invoke(CLI, list(args), env={**unset, **self.env})

    def serve(self) -> ProcessGateway:
        return ProcessGateway(self.env, free_port(), self.data_dir.parent / "serve.log")

    def tenants(self) -> set[str]:
        engine = make_engine(self.settings.database_url)
        try:
            with engine.connect() as conn:
                return set(conn.execute(text("SELECT name FROM tenants")).scalars())
        finally:
            engine.dispose()

    def kinds(self) -> list[str]:
        engine = make_engine(self.settings.database_url)
        try:
            with engine.connect() as conn:
                kinds = select(AuditEntry.kind).order_by(AuditEntry.seq)
                return list(conn.execute(kinds).scalars())
        finally:
            engine.dispose()

    def fingerprint(self) -> str:
        """A digest of the database's tenants and audit entries and of the data dir's secrets."""
        digest = hashlib.sha256(repr((sorted(self.tenants()), self.kinds())).encode())
        for name in ("pepper", "audit-signing.key"):
            digest.update((self.data_dir / name).read_bytes())
        return digest.hexdigest()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator(mode="subprocess", max_num_seqs=8, time_scale=0.01)
    yield handle
    handle.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def appliance(request, tmp_path: Path, sim: SimHandle) -> Iterator[Appliance]:
    data_dir = tmp_path / "data"
    env = {"SPARKPLANE_DATA_DIR": str(data_dir), "SPARKPLANE_ENGINE_URLS": sim.url}
    if request.param == "sqlite":
        yield Appliance(env, data_dir)
        return
    schema = f"sp_backup_{secrets.token_hex(5)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    env["SPARKPLANE_DATABASE_URL"] = f"{ADMIN_URL}?options=-csearch_path%3D{schema}"
    yield Appliance(env, data_dir, schema)
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def chat(url: str, key: str) -> int:
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    response = httpx.post(f"{url}/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
    return response.status_code


def test_backup_while_serving_then_restore_onto_the_stopped_appliance(appliance, tmp_path):
    actions.create_tenant(appliance.settings, "acme")
    key = actions.create_key(appliance.settings, "acme")
    server = appliance.serve()
    try:
        assert chat(server.url, key) == 200
        stop, answers = threading.Event(), []

        def load() -> None:  # the gateway keeps answering (and auditing) during the backup
            while not stop.is_set():
                answers.append(chat(server.url, key))

        loader = threading.Thread(target=load)
        loader.start()
        try:
            out = tmp_path / "appliance.backup"
            done = appliance.cli("backup", "--out", str(out))
        finally:
            stop.set()
            loader.join()
        assert done.exit_code == 0, done.output
        assert answers and set(answers) == {200}
        assert stat.S_IMODE(out.stat().st_mode) == 0o600

        before = appliance.fingerprint()
        refused = appliance.cli("restore", str(out))
        assert refused.exit_code == 1 and "the control plane is running" in refused.output
        assert appliance.fingerprint() == before  # nothing changed
    finally:
        server.stop()

    actions.create_tenant(appliance.settings, "after-backup")  # a change the restore undoes
    done = appliance.cli("restore", str(out))
    assert done.exit_code == 0, done.output
    assert appliance.tenants() == {"acme"}
    kept = sorted(path.name.split(".before-restore-")[0]
                  for path in appliance.data_dir.glob("*.before-restore-*"))  # fmt: skip
    database = "sparkplane.db" if appliance.schema is None else "database.pgdump"
    assert database in kept and "pepper" not in kept  # the same pepper is not set aside
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600
               for p in appliance.data_dir.glob("*.before-restore-*"))  # fmt: skip
    kinds = appliance.kinds()
    assert "audit.backup" in kinds and kinds[-1] == "audit.restored"
    verified = appliance.cli("audit", "verify", "--live")
    assert verified.exit_code == 0 and verified.output.strip().endswith("VALID"), verified.output
    server = appliance.serve()  # the restored pepper: the key issued before the backup works
    try:
        assert chat(server.url, key) == 200
    finally:
        server.stop()


def test_a_backup_whose_chain_does_not_verify_is_refused_and_changes_nothing(appliance, tmp_path):
    actions.create_tenant(appliance.settings, "acme")
    actions.create_key(appliance.settings, "acme")
    good = tmp_path / "good.backup"
    assert appliance.cli("backup", "--out", str(good)).exit_code == 0
    tamper_an_entry(appliance)  # someone with database rights rewrote history
    bad = tmp_path / "bad.backup"
    done = appliance.cli("backup", "--out", str(bad))
    assert done.exit_code == 1 and "does not verify" in done.output and bad.exists()

    assert appliance.cli("restore", str(good)).exit_code == 0  # back to the untampered state
    actions.create_tenant(appliance.settings, "later")
    before = appliance.fingerprint()
    done = appliance.cli("restore", str(bad))
    assert done.exit_code == 1 and "does not verify" in done.output, done.output
    assert "nothing was restored" in done.output
    assert appliance.fingerprint() == before and "later" in appliance.tenants()

    damaged = tmp_path / "damaged.backup"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    done = appliance.cli("restore", str(damaged))
    assert done.exit_code == 1 and appliance.fingerprint() == before, done.output
    assert "not a readable Sparkplane backup" in done.output or "damaged" in done.output


def tamper_an_entry(appliance: Appliance) -> None:
    """Bypass the append-only guards the way a database superuser could, and edit an entry."""
    engine = make_engine(appliance.settings.database_url)
    try:
        with engine.begin() as conn:
            if appliance.schema is None:
                conn.exec_driver_sql("DROP TRIGGER audit_entries_no_update")
            else:
                conn.exec_driver_sql("ALTER TABLE audit_entries DISABLE TRIGGER USER")
            conn.exec_driver_sql(
                'UPDATE audit_entries SET data = CAST(\'{"actor":"nobody"}\' AS BLOB) '
                "WHERE seq = 1".replace("BLOB", "BLOB" if appliance.schema is None else "bytea")
            )
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_postgres_restore_that_fails_changes_nothing(tmp_path, sim, monkeypatch):
    """A session still holding a table lock makes the restore's one transaction fail (after
    `lock_timeout`, not forever): the schema stays exactly as it was."""
    from controlplane.backup import postgres

    monkeypatch.setattr(postgres, "LOCK_TIMEOUT", "1s")
    schema = f"sp_backup_{secrets.token_hex(5)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{ADMIN_URL}?options=-csearch_path%3D{schema}"
    appliance = Appliance({"SPARKPLANE_DATA_DIR": str(tmp_path / "data"),
                           "SPARKPLANE_ENGINE_URLS": sim.url, "SPARKPLANE_DATABASE_URL": url},
                          tmp_path / "data", schema)  # fmt: skip
    try:
        actions.create_tenant(appliance.settings, "acme")
        out = tmp_path / "a.backup"
        assert appliance.cli("backup", "--out", str(out)).exit_code == 0
        actions.create_tenant(appliance.settings, "later")
        before = appliance.fingerprint()
        with psycopg.connect(url) as holder:
            holder.execute("LOCK TABLE tenants IN ACCESS SHARE MODE")  # an open transaction
            done = appliance.cli("restore", str(out))
        assert done.exit_code == 1 and "lock timeout" in done.output, done.output
        assert appliance.fingerprint() == before and "later" in appliance.tenants()
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_docs_list_exactly_what_a_backup_holds(tmp_path, sim):
    from fnmatch import fnmatch

    from controlplane.audit.content import load_or_create_master_key
    from controlplane.backup import postgres

    doc = (Path(__file__).resolve().parents[3] / "docs" / "controlplane.md").read_text()
    section = doc[doc.index("## Backup and restore") :]
    section = section[: section.index("\n## ")]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    documented = [name for line in table for name in re.findall(r"`([^`]+)`", line.split("|")[1])]
    data_dir = tmp_path / "data"
    appliance = Appliance({"SPARKPLANE_DATA_DIR": str(data_dir), "SPARKPLANE_ENGINE_URLS": sim.url},
                          data_dir)  # fmt: skip
    actions.create_tenant(appliance.settings, "acme")
    load_or_create_master_key(data_dir / "audit-content.key")
    out = tmp_path / "a.backup"
    assert appliance.cli("backup", "--out", str(out)).exit_code == 0
    with tarfile.open(out) as tar:
        members = tar.getnames()
    assert all(any(fnmatch(m, pattern) for pattern in documented) for m in members), members
    unused = [p for p in documented if not any(fnmatch(m, p) for m in members)]
    assert unused == ["database.pgdump"]  # the other database kind's member
    assert f"`lock_timeout` {postgres.LOCK_TIMEOUT}" in " ".join(section.split())
