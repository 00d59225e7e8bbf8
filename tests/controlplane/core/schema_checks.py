"""Looks at a migrated database: its tables and columns, its revision, its drift, its guards."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import DBAPIError

from controlplane.core import migrations
from controlplane.core.migrations import autogen


def columns(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def stamped(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return migrations.current(conn)


def drift(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return autogen.drift(conn)


def assert_audit_guards_hold(engine: Engine) -> None:
    for statement in ("UPDATE audit_entries SET kind = 'x'", "DELETE FROM audit_entries"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql(statement)
