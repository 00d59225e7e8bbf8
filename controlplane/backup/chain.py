"""The audit chain inside a backup, verified before anything is restored (and when it is made).

A SQLite snapshot is opened read-only (`immutable=1`: nothing is ever written to it); a
PostgreSQL dump's audit tables are read from its COPY data into a scratch SQLite file, where the
same live verifier (`controlplane/audit/verify.py`) checks them in seq order with bounded memory.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Engine, create_engine, insert

from controlplane.audit.checker import Report
from controlplane.audit.checkpoint import public_key_path
from controlplane.audit.models import AuditCheckpoint, AuditEntry
from controlplane.audit.verify import verify_live
from controlplane.backup import postgres
from controlplane.core.signing import load_private_key, public_pem

BATCH = 5000


def snapshot_engine(path: Path) -> Engine:
    """A read-only engine on a SQLite file that nothing else writes."""
    return create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    )


def trusted_keys(secrets: Path, extra: list[Path]) -> list[Path]:
    """The public keys to check checkpoints with: the backup's own `.pub` files, the public half
    of its signing key, and any the operator gives (`--pubkey`)."""
    private = secrets / "audit-signing.key"
    derived = public_key_path(private)
    if not derived.exists():
        derived.write_bytes(public_pem(load_private_key(private).public_key()))
    return [*sorted(secrets.glob("audit-signing*.pub")), *extra]


def verify_sqlite(path: Path, keys: list[Path]) -> Report:
    engine = snapshot_engine(path)
    try:
        return verify_live(engine, keys)
    finally:
        engine.dispose()


def verify_pgdump(dump: Path, keys: list[Path], scratch: Path) -> Report:
    engine = create_engine(f"sqlite:///{scratch}")
    try:
        AuditEntry.__table__.create(engine)  # type: ignore[attr-defined]
        AuditCheckpoint.__table__.create(engine)  # type: ignore[attr-defined]
        tables = {"audit_entries": AuditEntry, "audit_checkpoints": AuditCheckpoint}
        batches: dict[str, list[dict[str, object]]] = {name: [] for name in tables}
        with engine.begin() as conn:
            for table, row in postgres.audit_rows(dump):
                batches[table].append(row)
                if len(batches[table]) >= BATCH:
                    conn.execute(insert(tables[table]), batches[table])
                    batches[table] = []
            for table, rows in batches.items():
                if rows:
                    conn.execute(insert(tables[table]), rows)
        return verify_live(engine, keys)
    finally:
        engine.dispose()
