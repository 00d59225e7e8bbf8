"""Alembic migrations on real databases: a SQLite file and a fresh PostgreSQL schema per test.

The upgrade of a released database (test_release_database.py) uses what that release's own
start-up wrote; here the states before it are built from the revisions themselves: a "pre-runner"
database is the baseline's tables with rows and the audit guards, and no bookkeeping at all.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text

from controlplane.audit import install_guards
from controlplane.audit.store import append_entries, read_head
from controlplane.core import migrations
from controlplane.core.db import init_db, make_engine
from tests.controlplane.core.schema_checks import (
    assert_audit_guards_hold,
    columns,
    drift,
    stamped,
    tables,
)

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ALL = migrations.revisions()  # ["0000", "0001", ...]: a new revision needs no change here
AFTER_BASELINE = ALL[1:]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Engine]]:
    """A factory of engines on one empty database (each call: a new engine, same database)."""
    engines: list[Engine] = []
    if request.param == "sqlite":

        def make() -> Engine:
            engines.append(make_engine(f"sqlite:///{tmp_path / 'sparkplane.db'}"))
            return engines[-1]

        yield make
    else:
        schema = f"migr_{uuid.uuid4().hex[:12]}"
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')

        def make() -> Engine:
            options = {"options": f"-csearch_path={schema}"}
            engines.append(make_engine(PG_URL, connect_args=options))
            return engines[-1]

        yield make
        for engine in engines:
            engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
        return
    for engine in engines:
        engine.dispose()


def alembic(engine: Engine, action: Callable[..., None], revision: str) -> None:
    """Run an Alembic command (upgrade/downgrade/stamp) in one transaction on `engine`."""
    with engine.begin() as conn:
        action(migrations.alembic_config(conn), revision)


def build_pre_runner_database(engine: Engine) -> None:
    """Tables as the first release made them, with rows and the audit guards; no bookkeeping."""
    alembic(engine, command.upgrade, migrations.BASELINE)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
        conn.execute(
            text(
                "INSERT INTO tenants (id, name, max_concurrency, weight, max_tokens, "
                "allowed_models, queue_size, queue_timeout, disabled, retention_days, "
                "capture_content, created_at, updated_at) VALUES (1, 'acme', 3, 2.0, 50, "
                "'[\"sim-model\"]', 10, 5.0, false, 30, false, :now, :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, created_at) "
                "VALUES (1, 1, 'app', 'sk-sp-abcdef', :hash, :now)"
            ),
            {"hash": "ab" * 32, "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO usage_daily (tenant_id, day, requests, prompt_tokens, "
                "completion_tokens) VALUES (1, :day, 7, 700, 70)"
            ),
            {"day": date(2025, 1, 2)},
        )
        append_entries(conn, read_head(conn), [("test.event", "acme", b'{"n": 1}')], now)
    install_guards(engine)


def test_a_new_database_is_built_by_the_revisions_and_matches_the_models(
    make_db: Callable[[], Engine],
) -> None:
    engine = make_db()
    assert init_db(engine) == ALL
    assert ALL[:2] == [migrations.BASELINE, "0001"]
    assert stamped(engine) == migrations.head() == ALL[-1]
    assert "schema_migrations" not in tables(engine)
    assert drift(engine) == []  # the revisions build exactly what the models declare
    assert init_db(engine) == []  # second start: nothing to do


def test_drift_between_models_and_revisions_is_detected_and_downgrades_run(
    make_db: Callable[[], Engine],
) -> None:
    """The drift check can fail: at the baseline, the models have columns more (0001's)."""
    engine = make_db()
    init_db(engine)
    alembic(engine, command.downgrade, migrations.BASELINE)
    missing = [(d[0], d[2], d[3].name) for d in drift(engine) if d[0] == "add_column"]
    assert ("add_column", "tenants", "max_context_tokens") in missing
    alembic(engine, command.downgrade, "base")
    assert tables(engine) <= {"alembic_version"}
    assert init_db(engine) == ALL
    assert drift(engine) == []


def test_pre_runner_database_is_stamped_at_the_baseline_and_upgraded_keeping_its_rows(
    make_db: Callable[[], Engine],
) -> None:
    old = make_db()
    build_pre_runner_database(old)
    assert "max_context_tokens" not in columns(old, "tenants")
    old.dispose()

    engine = make_db()
    assert init_db(engine) == AFTER_BASELINE
    install_guards(engine)  # as every start does after init_db
    assert stamped(engine) == migrations.head()
    assert drift(engine) == []
    with engine.connect() as conn:
        tenant = conn.execute(
            text("SELECT name, max_concurrency, max_tokens, max_context_tokens FROM tenants")
        ).one()
        assert tuple(tenant) == ("acme", 3, 50, None)
        assert conn.scalar(text("SELECT prefix FROM api_keys WHERE tenant_id = 1")) == (
            "sk-sp-abcdef"
        )
        assert conn.scalar(text("SELECT prompt_tokens FROM usage_daily")) == 700
        # 0005: usage counted before keys and models were recorded: key 0 (unknown), model "".
        usage = conn.execute(text("SELECT key_id, model, estimated FROM usage_daily")).one()
        assert tuple(usage) == (0, "", False)
        assert conn.scalar(text("SELECT count(*) FROM audit_entries")) == 1
    assert_audit_guards_hold(engine)
    with engine.begin() as conn:  # the new column is a real, writable column
        conn.exec_driver_sql("UPDATE tenants SET max_context_tokens = 4096")
    assert init_db(engine) == []
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT max_context_tokens FROM tenants")) == 4096


def test_a_failing_revision_leaves_the_database_as_it_was(
    make_db: Callable[[], Engine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tmp_path / "scripts"
    shutil.copytree(
        migrations.SCRIPT_LOCATION, scripts, ignore=shutil.ignore_patterns("__pycache__")
    )
    (scripts / "versions" / "0002_boom.py").write_text(
        f'revision = "boom"\ndown_revision = "{migrations.head()}"\n\n'
        "def upgrade():\n    raise RuntimeError('revision failed')\n",
        encoding="utf-8",
    )
    engine = make_db()
    build_pre_runner_database(engine)
    monkeypatch.setattr(migrations, "SCRIPT_LOCATION", scripts)
    with pytest.raises(RuntimeError, match="revision failed"):
        init_db(engine)
    assert "max_context_tokens" not in columns(engine, "tenants")  # 0001 rolled back too
    assert "alembic_version" not in tables(engine)  # and so was the stamp
    monkeypatch.undo()
    assert init_db(engine) == AFTER_BASELINE  # the real revisions still apply afterwards


def test_replicas_starting_together_migrate_once(make_db: Callable[[], Engine]) -> None:
    old = make_db()
    build_pre_runner_database(old)
    old.dispose()
    engines = [make_db() for _ in range(4)]
    results: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def replica(engine: Engine) -> None:
        start.wait()
        try:
            results.append(init_db(engine))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(results, key=len) == [[], [], [], AFTER_BASELINE]  # exactly one migrated
    assert stamped(engines[0]) == migrations.head()
    assert "max_context_tokens" in columns(engines[0], "tenants")


def test_a_database_a_later_release_migrated_is_used_as_it_is(
    make_db: Callable[[], Engine], caplog: pytest.LogCaptureFixture
) -> None:
    """After `sparkplane rollback` the older release starts on the newer schema, as before."""
    engine = make_db()
    init_db(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with caplog.at_level(logging.WARNING, logger=migrations.__name__):
        assert init_db(engine) == []
    assert "revision 9999, newer than this release's head" in caplog.text
    assert stamped(engine) == "9999"


def test_a_database_with_only_some_of_our_tables_is_refused(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'odd.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE tenants (id INTEGER PRIMARY KEY)")
    with pytest.raises(migrations.MigrationError, match="not made by a Sparkplane release"):
        init_db(engine)
    assert tables(engine) == {"tenants"}
    engine.dispose()


def test_unknown_steps_of_the_old_runner_are_refused(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'legacy.db'}")
    build_pre_runner_database(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE schema_migrations (name VARCHAR(200) PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO schema_migrations VALUES ('0002_from_elsewhere')")
    with pytest.raises(migrations.MigrationError, match="0002_from_elsewhere"):
        init_db(engine)
    assert "alembic_version" not in tables(engine)
    engine.dispose()
