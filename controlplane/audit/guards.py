"""Database-level append-only guards: UPDATE/DELETE on the audit tables is refused.

The only exception is the retention job, which inserts a row into `audit_prune_permits` inside
its own transaction (and removes it before committing). Even then an UPDATE may only redact an
entry's `data` (set it to NULL): seq, envelope and hash never change.
"""

from __future__ import annotations

from sqlalchemy import Engine

SQLITE_GUARDS = [
    """CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries
    WHEN NOT EXISTS (SELECT 1 FROM audit_prune_permits)
    BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only: DELETE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries
    WHEN NOT EXISTS (SELECT 1 FROM audit_prune_permits)
      OR NEW.seq IS NOT OLD.seq OR NEW.envelope IS NOT OLD.envelope
      OR NEW.hash IS NOT OLD.hash OR NEW.data IS NOT NULL
    BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only: DELETE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only: UPDATE refused'); END""",
]

POSTGRES_GUARDS = [
    """CREATE OR REPLACE FUNCTION audit_entries_guard() RETURNS trigger AS $$
    BEGIN
      IF TG_OP <> 'TRUNCATE' AND EXISTS (SELECT 1 FROM audit_prune_permits) THEN
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        IF NEW.seq = OLD.seq AND NEW.envelope = OLD.envelope AND NEW.hash = OLD.hash
           AND NEW.data IS NULL THEN RETURN NEW; END IF;
      END IF;
      RAISE EXCEPTION USING MESSAGE = 'audit_entries is append-only: ' || TG_OP || ' refused';
    END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE FUNCTION audit_checkpoints_guard() RETURNS trigger AS $$
    BEGIN
      RAISE EXCEPTION USING MESSAGE = 'audit_checkpoints is append-only: ' || TG_OP || ' refused';
    END
    $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE TRIGGER audit_entries_guard BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_guard()""",
    """CREATE OR REPLACE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_guard()""",
    """CREATE OR REPLACE TRIGGER audit_checkpoints_guard BEFORE UPDATE OR DELETE
    ON audit_checkpoints FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_guard()""",
    """CREATE OR REPLACE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE
    ON audit_checkpoints FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_guard()""",
]


def install_guards(engine: Engine) -> None:
    """Create the triggers (idempotent). Call after `Base.metadata.create_all`."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        statements = SQLITE_GUARDS
    elif dialect == "postgresql":
        statements = POSTGRES_GUARDS
    else:
        raise ValueError(f"no audit guards for database dialect {dialect!r}")
    with engine.begin() as conn:
        # No '%' in these statements: psycopg would read it as a placeholder.
        for statement in statements:
            conn.exec_driver_sql(statement)
