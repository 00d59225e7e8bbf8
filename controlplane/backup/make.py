"""`sparkplane backup`: a consistent snapshot of a serving control plane, in one file.

The secrets are copied first, then the database is snapshotted: a key rotation between the two
leaves a backup whose chain names a newer key than the one it holds, and the restored service
signs with the older key, which the chain's rotation entry vouches for (auditors trust both).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

import controlplane
from controlplane.audit.checker import Report
from controlplane.audit.writer import AuditWriter
from controlplane.backup import postgres
from controlplane.backup.archive import DATABASE_MEMBERS, FORMAT, secret_files, write_archive
from controlplane.backup.chain import trusted_keys, verify_pgdump, verify_sqlite


@dataclass(frozen=True)
class BackupResult:
    path: Path
    database: str
    audit_seq: int  # the audit.backup entry of this backup
    report: Report  # the chain as the backup holds it


def database_kind(engine: Engine) -> str:
    return "postgresql" if engine.dialect.name == "postgresql" else "sqlite"


async def make_backup(
    engine: Engine, data_dir: Path, writer: AuditWriter, out: Path, actor: str
) -> BackupResult:
    """Record the backup in the chain, then write `out` (an absolute path; 0600) from a
    consistent snapshot."""
    kind = database_kind(engine)
    seq = await writer.record("audit.backup", actor=actor, file=out.name, database=kind)
    await writer.checkpoint_now()
    return await asyncio.to_thread(_write_backup, engine, kind, data_dir, out, seq)


def _write_backup(engine: Engine, kind: str, data_dir: Path, out: Path, seq: int) -> BackupResult:
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=out.parent) as tmp:
        staging = Path(tmp)
        members = {}
        for name, source in secret_files(data_dir).items():
            members[name] = staging / name
            members[name].parent.mkdir(mode=0o700, exist_ok=True)
            shutil.copyfile(source, members[name])
        database = staging / DATABASE_MEMBERS[kind]
        manifest: dict[str, object] = {
            "format": FORMAT, "created": datetime.now(UTC).isoformat(), "database": kind,
            "sparkplane_version": controlplane.__version__, "audit_backup_seq": seq,
        }  # fmt: skip
        keys = trusted_keys(staging / "secrets", [])
        if kind == "sqlite":
            snapshot_sqlite(Path(str(engine.url.database)), database)
            report = verify_sqlite(database, keys)
        else:
            manifest["schema"] = schema = postgres.schema_of(engine)
            postgres.dump(engine.url, schema, database)
            report = verify_pgdump(database, keys, staging / "chain-check.sqlite")
        manifest["chain"] = {"first_seq": report.first_seq, "last_seq": report.last_seq,
                             "signed_to": report.covered_to, "valid": report.valid}  # fmt: skip
        members[DATABASE_MEMBERS[kind]] = database
        write_archive(out, manifest, members)
    return BackupResult(out, kind, seq, report)


def snapshot_sqlite(source: Path, dest: Path) -> None:
    """SQLite's online backup API: one read transaction, so one consistent state, while the
    server goes on writing (WAL). The copy is switched to a plain journal: a single file."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(dest)
        try:
            src.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
    finally:
        src.close()
