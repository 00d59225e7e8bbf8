"""`sparkplane admins ...` on a real SQLite database in a temp data dir."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli.admins import admins_app
from controlplane.console.auth import SignInOutcome, authenticate
from controlplane.core.db import make_engine, session_factory

Invoke = Callable[..., str]


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., str]:
    runner = CliRunner()
    env = {"SPARKPLANE_DATA_DIR": str(tmp_path / "data")}

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(admins_app, list(args), env=env)
        assert result.exit_code == code, result.output
        return result.output

    return invoke


def _outcome(tmp_path: Path, user: str, password: str) -> SignInOutcome:
    engine = make_engine(f"sqlite:///{(tmp_path / 'data' / 'sparkplane.db').resolve()}")
    with session_factory(engine)() as db:
        outcome = authenticate(db, user, password).outcome
    engine.dispose()
    return outcome


def test_create_prints_one_time_password_last_and_writes_0600_file(
    run: Invoke, tmp_path: Path
) -> None:
    out = tmp_path / "secret" / "admin-password"
    output = run("create", "Root", "--role", "admin", "--out", str(out))
    password = output.strip().splitlines()[-1]
    assert len(password) >= 20 and out.read_text().strip() == password
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert _outcome(tmp_path, "root", password) is SignInOutcome.OK
    assert "already exists" in run("create", "root", code=1)
    again = run("create", "root", "--reset").strip().splitlines()[-1]
    assert again != password
    assert _outcome(tmp_path, "root", password) is SignInOutcome.BAD_CREDENTIALS
    assert _outcome(tmp_path, "root", again) is SignInOutcome.OK
    assert "root\tadmin\tlocal\tmust-change-password\tnever\t-\t-" in run("list")


def test_roles_disable_and_last_admin_guard(run: Invoke, tmp_path: Path) -> None:
    run("create", "boss")
    assert "role must be one of" in run("create", "eve", "--role", "root", code=1)
    assert "last enabled local admin" in run("disable", "boss", code=1)
    assert "last enabled local admin" in run("set-role", "boss", "auditor", code=1)
    run("create", "audrey", "--role", "auditor")
    run("create", "second")
    run("disable", "boss")
    listing = run("list")
    assert "boss\tadmin\tlocal\tdisabled" in listing and "audrey\tauditor" in listing
    assert "does not exist" in run("unlock", "nobody", code=1)


def test_no_change_is_kept_when_the_audit_store_is_down(run: Invoke, tmp_path: Path) -> None:
    run("create", "boss")
    database = tmp_path / "data" / "sparkplane.db"
    query = "select username, role, password_hash from admin_users"
    with sqlite3.connect(database) as conn:  # a real fault: every audit write is aborted
        before = conn.execute(query).fetchall()
        for table in ("audit_entries", "audit_health_probe"):
            for op in ("INSERT", "UPDATE"):
                conn.execute(
                    f"CREATE TRIGGER refuse_{table}_{op} BEFORE {op} ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'audit store refuses writes (test fault)'); END"
                )
    for args in (("create", "eve"), ("reset-password", "boss"), ("set-role", "boss", "auditor")):
        assert "audit store unavailable" in run(*args, code=1)
    with sqlite3.connect(database) as conn:
        after = conn.execute(query).fetchall()
    assert after == before and after[0][:2] == ("boss", "admin")  # nothing changed, unaudited
