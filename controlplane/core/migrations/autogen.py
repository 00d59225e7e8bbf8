"""The models as Alembic's autogenerate sees them: for new revisions and the drift test."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData

from controlplane.core.db import Base, UtcDateTime, import_table_modules


def model_metadata() -> MetaData:
    """Every table of every package, as the models declare it today."""
    import_table_modules()
    return Base.metadata


def render_item(kind: str, item: Any, context: AutogenContext) -> str | bool:
    """Write a revision's column types in plain SQLAlchemy: revisions never import our models."""
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def options() -> dict[str, Any]:
    """`context.configure` arguments for autogenerate (see env.py)."""
    return {"target_metadata": model_metadata(), "render_item": render_item, "compare_type": True}


def drift(conn: Connection) -> list[Any]:
    """What autogenerate would write to make the database on `conn` match the models."""
    context = MigrationContext.configure(conn, opts=options())
    return list(compare_metadata(context, model_metadata()))
