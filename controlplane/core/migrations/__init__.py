"""Schema migrations with Alembic: the revisions in `versions/` build every table.

`upgrade(conn)` brings the database on `conn` to the head revision. It runs at every start from
`controlplane.core.db.init_db`, which takes the lock and owns the transaction; see README.md
next to this file for how to add a revision.

- a database with none of our tables is built by the revisions from the first one on;
- a database with `alembic_version` runs the revisions it has not had yet;
- a database written by the runner this replaced (release 0.1.0: a `schema_migrations` table
  naming the steps it applied) is stamped at the revision of its last step, then upgraded; a
  database from before that runner (tables, no bookkeeping) is stamped at the baseline. The
  `schema_migrations` table is dropped in the same transaction: `alembic_version` replaces it;
- a database at a revision this release does not know was migrated by a later release and kept
  through `sparkplane rollback`: it is left as it is (revisions only add, so this release still
  runs on it), as the old runner did with steps it did not know.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).resolve().parent
BASELINE = "0000"
# The replaced runner's table and each of its steps -> the revision that does the same.
LEGACY_TABLE = "schema_migrations"
LEGACY_STEPS = {"0001_tenants_max_context_tokens": "0001"}
# What the baseline revision creates: a database holding some of these is one of ours.
BASELINE_TABLES = frozenset(
    {
        "tenants",
        "api_keys",
        "auth_epoch",
        "usage_daily",
        "admission_leases",
        "admission_replicas",
        "admission_buckets",
        "audit_entries",
        "audit_checkpoints",
        "audit_prune_permits",
        "audit_health_probe",
        "audit_content_keys",
        "admin_users",
        "console_sessions",
    }
)


class MigrationError(RuntimeError):
    """The database's schema state cannot be brought to head safely; nothing was changed."""


def alembic_config(conn: Connection, **configure: Any) -> Config:
    """An Alembic config whose env.py runs on `conn`; `configure` goes to `context.configure`."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = conn
    config.attributes["configure"] = configure
    return config


def head() -> str:
    """The newest revision this release ships."""
    return str(ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head())


def revisions() -> list[str]:
    """Every revision this release ships, oldest first."""
    walked = ScriptDirectory(str(SCRIPT_LOCATION)).walk_revisions()
    return [script.revision for script in reversed(list(walked))]


def current(conn: Connection) -> str | None:
    """The revision the database is stamped at (None: not under Alembic)."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(conn: Connection) -> list[str]:
    """Bring the schema on `conn` to head; returns the revisions run now (empty: no-op).

    The caller holds the migration lock, has the transaction open and commits it.
    """
    applied: list[str] = []

    def record(*, step: Any, **_: Any) -> None:
        if not step.is_stamp:
            applied.append(step.up_revision_id)

    config = alembic_config(conn, on_version_apply=record)
    if not _adopt_unversioned(conn, config) and _is_ahead(conn):
        return []
    command.upgrade(config, "head")
    if applied:
        log.info("database migrated to revision %s (ran %s)", applied[-1], ", ".join(applied))
    return applied


def _adopt_unversioned(conn: Connection, config: Config) -> bool:
    """Stamp a database not yet under Alembic at the revision its tables are at; True if done."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        return False
    if LEGACY_TABLE in tables:
        done = set(conn.scalars(text(f"SELECT name FROM {LEGACY_TABLE}")))  # noqa: S608
        unknown = done - LEGACY_STEPS.keys()
        if unknown:
            raise MigrationError(f"{LEGACY_TABLE} names steps this release does not know: "
                                 f"{', '.join(sorted(unknown))}")  # fmt: skip
        matched = [revision for step, revision in LEGACY_STEPS.items() if step in done]
        at = matched[-1] if matched else BASELINE
    elif tables & BASELINE_TABLES:
        at = BASELINE
    else:
        return False  # a new database: every revision runs
    missing = BASELINE_TABLES - tables
    if missing:
        raise MigrationError(
            f"the database has some of Sparkplane's tables but not {', '.join(sorted(missing))}: "
            "it was not made by a Sparkplane release; refusing to guess its schema"
        )
    command.stamp(config, at)
    if LEGACY_TABLE in tables:
        conn.execute(text(f"DROP TABLE {LEGACY_TABLE}"))
    log.info("database from before Alembic stamped at revision %s", at)
    return True


def _is_ahead(conn: Connection) -> bool:
    """The database is at a revision this release does not ship (a later release made it)."""
    revision = current(conn)
    if revision is None:
        return False
    script = ScriptDirectory(str(SCRIPT_LOCATION))
    if revision in {r.revision for r in script.walk_revisions()}:
        return False
    log.warning(
        "database schema is at revision %s, newer than this release's head %s (a later "
        "release migrated it); running on it without migrating",
        revision,
        script.get_current_head(),
    )
    return True
