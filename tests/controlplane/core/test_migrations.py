"""Schema migrations on real databases: a SQLite file and a fresh PostgreSQL schema per test.

An "old" database is what the code before migrations created: every table (with the audit
guards) but no `tenants.max_context_tokens` and no `schema_migrations`. It is built with today's
`create_all` and then brought back to that state with DROP COLUMN / DROP TABLE.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from controlplane.audit import install_guards
from controlplane.audit.store import append_entries, read_head
from controlplane.core.db import Base, import_table_modules, init_db, make_engine
from controlplane.core.migrations import STEPS, Step, migrate

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STEP_NAMES = [step.name for step in STEPS]


def sqlite_engine(directory: Path) -> Engine:
    return make_engine(f"sqlite:///{directory / 'sparkplane.db'}")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Engine]]:
    """A factory of engines on one empty database (each call: a new engine, same database)."""
    engines: list[Engine] = []
    if request.param == "sqlite":

        def make() -> Engine:
            engines.append(sqlite_engine(tmp_path))
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


def build_old_database(engine: Engine) -> None:
    """The schema as it was before migrations, with rows in it and the audit guards on."""
    import_table_modules()
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE schema_migrations")
        conn.exec_driver_sql("ALTER TABLE tenants DROP COLUMN max_context_tokens")
    install_guards(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
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


def columns(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def recorded(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(text("SELECT name FROM schema_migrations ORDER BY name")))


def assert_audit_guards_hold(engine: Engine) -> None:
    for statement in ("UPDATE audit_entries SET kind = 'x'", "DELETE FROM audit_entries"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql(statement)


def test_old_database_is_migrated_keeps_its_rows_and_a_second_run_is_a_no_op(
    make_db: Callable[[], Engine],
) -> None:
    old = make_db()
    build_old_database(old)
    assert "max_context_tokens" not in columns(old, "tenants")
    old.dispose()

    engine = make_db()
    assert init_db(engine) == STEP_NAMES
    install_guards(engine)  # as every start does after init_db
    assert "max_context_tokens" in columns(engine, "tenants")
    assert recorded(engine) == sorted(STEP_NAMES)
    with engine.connect() as conn:
        tenant = conn.execute(
            text("SELECT name, max_concurrency, max_tokens, max_context_tokens FROM tenants")
        ).one()
        assert tuple(tenant) == ("acme", 3, 50, None)
        assert conn.scalar(text("SELECT prefix FROM api_keys WHERE tenant_id = 1")) == (
            "sk-sp-abcdef"
        )
        assert conn.scalar(text("SELECT prompt_tokens FROM usage_daily")) == 700
        assert conn.scalar(text("SELECT count(*) FROM audit_entries")) == 1
    assert_audit_guards_hold(engine)
    with engine.begin() as conn:  # the new column is a real, writable column
        conn.exec_driver_sql("UPDATE tenants SET max_context_tokens = 4096")

    assert init_db(engine) == []  # second run: nothing to do
    assert recorded(engine) == sorted(STEP_NAMES)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT max_context_tokens FROM tenants")) == 4096


def test_new_database_is_created_at_head_and_stamped(make_db: Callable[[], Engine]) -> None:
    engine = make_db()
    assert init_db(engine) == []  # no step runs on a new database: create_all makes it at head
    assert recorded(engine) == sorted(STEP_NAMES)
    assert "max_context_tokens" in columns(engine, "tenants")
    assert init_db(engine) == []


def test_a_failing_step_leaves_the_database_as_it_was(make_db: Callable[[], Engine]) -> None:
    engine = make_db()
    build_old_database(engine)

    def boom(conn: Connection) -> None:
        raise RuntimeError("step failed")

    with pytest.raises(RuntimeError, match="step failed"):
        migrate(engine, [*STEPS, Step("9999_boom", boom)])
    assert "max_context_tokens" not in columns(engine, "tenants")  # 0001 rolled back too
    assert "schema_migrations" not in inspect(engine).get_table_names()
    assert init_db(engine) == STEP_NAMES  # and the real steps still apply afterwards


def test_replicas_starting_together_migrate_once(make_db: Callable[[], Engine]) -> None:
    old = make_db()
    build_old_database(old)
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
    assert sorted(results, key=len) == [[], [], [], STEP_NAMES]  # exactly one ran the step
    assert recorded(engines[0]) == sorted(STEP_NAMES)
    assert "max_context_tokens" in columns(engines[0], "tenants")
