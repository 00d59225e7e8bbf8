"""`sparkplane restore`: a backup onto a stopped appliance, or nothing at all.

Order: take the `running` lock exclusively (every serving control plane holds it shared, on
PostgreSQL as a session advisory lock that replicas on other machines hold too, on SQLite as a
`flock` next to the database: a running server, or one starting meanwhile, makes the restore
fail at once); extract the archive into a private staging directory and check every member's
hash, the secrets and the audit chain; only then replace the database and the secrets. Every
replaced file is kept beside the new one as `NAME.before-restore-<time>` (0600), and on
PostgreSQL a dump of the schema being replaced as `DATA_DIR/database.pgdump.before-restore-<time>`,
so the previous state can be put back by hand.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from controlplane.audit.checker import Report
from controlplane.audit.verify import verify_live
from controlplane.backup import postgres
from controlplane.backup.archive import (
    DATABASE_MEMBERS,
    SECRETS,
    BackupError,
    file_digest,
    read_archive,
)
from controlplane.backup.chain import trusted_keys, verify_pgdump, verify_sqlite
from controlplane.backup.make import database_kind
from controlplane.core.dblock import RUNNING_LOCK, DatabaseLock
from controlplane.core.security import PEPPER_BYTES
from controlplane.core.signing import SigningKeyError, load_private_key


@dataclass(frozen=True)
class RestoreResult:
    manifest: dict[str, Any]
    report: Report  # the chain as restored
    set_aside: list[Path]


def restore_backup(
    engine: Engine, data_dir: Path, archive: Path, pubkeys: list[Path]
) -> RestoreResult:
    """Restore `archive` onto the database of `engine` and into `data_dir`."""
    lock = DatabaseLock(engine, RUNNING_LOCK)
    if not lock.acquire():
        raise BackupError(
            "the control plane is running on this database (it holds the 'running' lock): "
            "stop every replica first (systemctl stop sparkplane-controlplane)"
        )
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(prefix=".restore-", dir=data_dir) as tmp:
            staging = Path(tmp)
            manifest = read_archive(archive, staging)
            kind = database_kind(engine)
            if manifest.get("database") != kind:
                raise BackupError(f"{archive} holds a {manifest.get('database')} database; "
                                  f"this appliance uses {kind}")  # fmt: skip
            _check_secrets(staging / "secrets")
            keys = trusted_keys(staging / "secrets", pubkeys)
            database = staging / DATABASE_MEMBERS[kind]
            if kind == "sqlite":
                report = verify_sqlite(database, keys)
            else:
                report = verify_pgdump(database, keys, staging / "chain-check.sqlite")
            if not report.valid:
                problem = report.problems[0]
                raise BackupError(
                    f"the audit chain in {archive} does not verify ({problem.kind} at seq "
                    f"{problem.seq}: {problem.detail}); nothing was restored"
                )
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            set_aside = _install_database(engine, kind, database, manifest, data_dir, stamp)
            for path in sorted((staging / "secrets").iterdir()):
                if (SECRETS + path.name) in manifest["files"]:
                    set_aside += _install(path, data_dir / path.name, stamp)
        restored = verify_live(engine, sorted(data_dir.glob("audit-signing*.pub")) + pubkeys)
    finally:
        lock.release()
    return RestoreResult(manifest, restored, set_aside)


def _check_secrets(secrets: Path) -> None:
    pepper = secrets / "pepper"
    if len(pepper.read_bytes()) != PEPPER_BYTES:
        raise BackupError("the backup's pepper is not 32 bytes")
    try:
        load_private_key(secrets / "audit-signing.key")
    except SigningKeyError as exc:
        raise BackupError(f"the backup's audit signing key is unusable: {exc}") from None


def _install_database(
    engine: Engine, kind: str, staged: Path, manifest: dict[str, Any], data_dir: Path, stamp: str
) -> list[Path]:
    if kind == "postgresql":
        schema = postgres.schema_of(engine)
        if manifest.get("schema") != schema:
            raise BackupError(f"the backup is of schema {manifest.get('schema')!r}, this "
                              f"database's is {schema!r}; nothing was restored")  # fmt: skip
        kept = []
        if postgres.schema_exists(engine, schema):  # the state being replaced, for the record
            kept.append(data_dir / f"database.pgdump.before-restore-{stamp}")
            postgres.dump(engine.url, schema, kept[0])
        postgres.restore(engine.url, schema, staged)
        return kept
    target = Path(str(engine.url.database))
    set_aside = []
    for suffix in ("-wal", "-shm", "-journal"):  # an old WAL must never meet the new file
        set_aside += _set_aside(target.with_name(target.name + suffix), stamp)
    return _install(staged, target, stamp) + set_aside


def _install(source: Path, target: Path, stamp: str) -> list[Path]:
    """Copy next to `target` (0600, fsynced), set the old file aside, rename into place; a
    target that already holds these bytes is left alone."""
    if target.is_file() and file_digest(target) == file_digest(source):
        return []
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = target.with_name(target.name + ".restoring")
    fd = os.open(incoming, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
        if os.geteuid() == 0:  # run as root: the service's user must still own its files
            owner = (target if target.exists() else target.parent).stat()
            os.fchown(out.fileno(), owner.st_uid, owner.st_gid)
    kept = _set_aside(target, stamp)
    os.replace(incoming, target)
    return kept


def _set_aside(path: Path, stamp: str) -> list[Path]:
    if not path.exists():
        return []
    kept = path.with_name(f"{path.name}.before-restore-{stamp}")
    os.chmod(path, 0o600)  # the whole database or a secret, for the owner only
    os.replace(path, kept)
    return [kept]
