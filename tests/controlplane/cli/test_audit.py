"""The `sparkplane audit` commands, run as real processes against a real SQLite data dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.core.config import Settings
from controlplane.core.db import make_engine, session_factory
from controlplane.tenancy.models import TenantCreate
from controlplane.tenancy.store import create_tenant

REPO = Path(__file__).resolve().parents[3]
SPARKPLANE = Path(sys.executable).with_name("sparkplane")


def sparkplane(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKPLANE_")}
    if data_dir is not None:
        env["SPARKPLANE_DATA_DIR"] = str(data_dir)
    return subprocess.run([str(SPARKPLANE), "audit", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def data_dir(tmp_path):
    directory = tmp_path / "data"
    events = tmp_path / "installer-events.jsonl"
    events.write_text(
        '{"action": "install", "time": "2026-11-26T20:00:00Z", "version": "0.1.0"}\n'
        '{"action": "upgrade", "time": "2026-11-26T21:00:00Z", "version": "0.2.0"}\n'
    )
    done = sparkplane("import-installer-events", str(events), data_dir=directory)
    assert done.returncode == 0, done.stderr
    assert "imported 2 installer events (0 already present)" in done.stdout
    again = sparkplane("import-installer-events", str(events), data_dir=directory)
    assert "imported 0 installer events (2 already present)" in again.stdout
    return directory


def test_export_then_offline_verify(data_dir, tmp_path):
    out = tmp_path / "export.jsonl"
    done = sparkplane("export", "--reason", "yearly audit", "--out", str(out), data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert "export recorded as entry 3" in done.stdout
    pub = data_dir / "audit-signing.pub"
    verified = sparkplane("verify", str(out), "--pubkey", str(pub))  # no data dir, no database
    assert verified.returncode == 0 and verified.stdout.strip().endswith("VALID"), verified.stdout
    as_json = json.loads(sparkplane("verify", str(out), "--pubkey", str(pub), "--json").stdout)
    assert as_json["valid"] and as_json["entries_valid"] == 3

    out.write_bytes(out.read_bytes().replace(b'"version":"0.1.0"', b'"version":"0.1.1"'))
    tampered = sparkplane("verify", str(out), "--pubkey", str(pub), "--json")
    assert tampered.returncode == 1
    problems = json.loads(tampered.stdout)["problems"]
    assert {"kind": "modified", "seq": 1, "line": 2}.items() <= problems[0].items()


def test_live_verify_checkpoint_and_prune(data_dir):
    assert sparkplane("checkpoint", data_dir=data_dir).stdout.strip() == "checkpoint at entry 2"
    live = sparkplane("verify", "--live", data_dir=data_dir)
    assert live.returncode == 0 and "VALID" in live.stdout, live.stdout
    rotated = sparkplane("rotate-key", data_dir=data_dir)
    assert rotated.returncode == 0 and rotated.stdout.startswith("new audit key"), rotated.stderr
    pruned = sparkplane("prune", "--tenant-days", "acme=30", data_dir=data_dir)
    assert pruned.returncode == 0 and "pruned 0 entries" in pruned.stdout, pruned.stderr
    assert sparkplane("verify", "--live", data_dir=data_dir).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("verify", "missing.jsonl", "--pubkey", "k.pub"), "export file not found"),
        (("verify",), "give an export FILE and --pubkey"),
        (("export", "--reason", "r", "--out", "x", "--from", "yesterday"), "not an ISO date"),
        (("prune", "--tenant-days", "acme"), "NAME=DAYS"),
        (("import-installer-events", "nope.jsonl"), "events file not found"),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path, args, message):
    done = sparkplane(*args, data_dir=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_bad_pubkey_file_is_named(tmp_path):
    export = tmp_path / "e.jsonl"
    export.write_text("{}\n")
    (tmp_path / "k.pub").write_text("not a key")
    done = sparkplane("verify", str(export), "--pubkey", str(tmp_path / "k.pub"))
    assert done.returncode == 2 and "not a PEM public key" in done.stderr


def test_prune_applies_each_tenants_own_retention_and_the_settings_default(data_dir):
    """By hand as by the schedule: the tenants' stored retention_days and
    SPARKPLANE_AUDIT_RETENTION_DAYS, unless the command line says otherwise."""
    settings = Settings(data_dir=data_dir)
    engine = make_engine(settings.database_url)
    with session_factory(engine)() as session:
        create_tenant(session, TenantCreate(name="acme", retention_days=90))
        create_tenant(session, TenantCreate(name="beta", retention_days=3000))
        session.commit()
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKPLANE_")}
    env |= {"SPARKPLANE_DATA_DIR": str(data_dir), "SPARKPLANE_AUDIT_RETENTION_DAYS": "1000"}
    done = subprocess.run([str(SPARKPLANE), "audit", "prune"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "retention in days: default 1000; acme 90, beta 3000\n" in done.stdout
    done = sparkplane("prune", "--tenant-days", "acme=30", "--older-than-days", "400",
                      data_dir=data_dir)  # fmt: skip
    assert "retention in days: default 400; acme 30, beta 3000\n" in done.stdout, done.stderr
