"""Synchronous chain operations inside one transaction; used by the writer thread and the CLI.

`lock_chain` must be the first statement of the transaction: it serialises every appender of the
chain (other threads, processes and PostgreSQL replicas) so that reading the head and appending
the batch happen in one writer order.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect, insert, select, update

from controlplane.audit.chain import GENESIS_HASH, ChainEntry, build_entry
from controlplane.audit.checkpoint import CheckpointSigner
from controlplane.audit.models import AuditCheckpoint, AuditEntry, AuditHealthProbe
from controlplane.core.db import advisory_lock_key

# One advisory-lock key per chain (the chain lives in the connection's schema).
CHAIN_LOCK_KEY = advisory_lock_key("sparkplane.audit.chain")


def lock_chain(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY})")
    else:
        # Take SQLite's write lock before reading the head; a deferred transaction could read a
        # stale head and then fail to upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# Built once: the writer runs these on every group commit, and constructing a select() costs
# more CPU than executing it.
_LATEST_CHECKPOINT = (
    select(AuditCheckpoint.size, AuditCheckpoint.root_hash, AuditCheckpoint.created)
    .order_by(AuditCheckpoint.size.desc())
    .limit(1)
)


def read_head(conn: Connection) -> tuple[int, bytes]:
    """(seq, hash) of the last entry; after a full prune, the checkpoint at the cut."""
    with _driver_cursor(conn) as cursor:
        row = cursor.execute(_HEAD_SQL).fetchone()
    if row is not None:
        return int(row[0]), bytes(row[1])
    checkpoint = latest_checkpoint(conn)
    if checkpoint is not None:
        return checkpoint.size, bytes(checkpoint.root_hash)
    return 0, GENESIS_HASH


def has_entry(conn: Connection, seq: int, entry_hash: bytes) -> bool:
    """Whether entry `seq` of the chain has this hash (a commit of ours that we lost sight of)."""
    found = conn.execute(select(AuditEntry.hash).where(AuditEntry.seq == seq)).scalar()
    return found is not None and bytes(found) == entry_hash


class CheckpointRow(NamedTuple):
    size: int
    root_hash: bytes
    created: datetime


def latest_checkpoint(conn: Connection) -> CheckpointRow | None:
    row = conn.execute(_LATEST_CHECKPOINT).first()
    return None if row is None else CheckpointRow(int(row[0]), bytes(row[1]), as_utc(row[2]))


def append_entries(
    conn: Connection,
    head: tuple[int, bytes],
    items: Sequence[tuple[str, str | None, bytes]],
    moment: datetime,
) -> list[ChainEntry]:
    """Link (kind, tenant, data) items after `head` and insert them; returns the entries."""
    seq, prev = head
    entries = []
    for kind, tenant, data in items:
        seq += 1
        entry = build_entry(prev, seq, kind, tenant, data, moment)
        entries.append(entry)
        prev = entry.hash
    if entries:
        stored_time = _time_binder(conn.dialect)(moment)  # the whole batch shares one moment
        rows = [(e.seq, stored_time, e.kind, e.tenant, e.envelope, e.data, e.hash) for e in entries]
        with _driver_cursor(conn) as cursor:
            cursor.executemany(_insert_sql(conn.dialect), rows)
    return entries


# The chain head and the entry inserts run on every group commit: they go straight to the DBAPI
# cursor, inside the same transaction, because SQLAlchemy's per-statement work (compile cache,
# execution context, result wrapping) cost more CPU than SQLite's own. The time column's values
# still go through its SQLAlchemy type, so rows are stored exactly as an ORM insert stores them.
_HEAD_SQL = "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1"
_INSERT_SQL = (
    "INSERT INTO audit_entries (seq, time, kind, tenant, envelope, data, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
assert AuditEntry.__tablename__ == "audit_entries"  # the raw SQL above names it


@contextlib.contextmanager
def _driver_cursor(conn: Connection) -> Iterator[Any]:
    """A cursor of the connection's own DBAPI connection (same transaction), closed after use."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    finally:
        cursor.close()


def _insert_sql(dialect: Dialect) -> str:
    return _INSERT_SQL if dialect.paramstyle == "qmark" else _INSERT_SQL.replace("?", "%s")


@functools.cache
def _time_binder(dialect: Dialect) -> Callable[[datetime], Any]:
    processor = AuditEntry.__table__.c.time.type.dialect_impl(dialect).bind_processor(dialect)
    return processor if processor is not None else (lambda moment: moment)


def add_checkpoint(
    conn: Connection, signer: CheckpointSigner, size: int, root_hash: bytes, moment: datetime
) -> None:
    conn.execute(
        insert(AuditCheckpoint).values(
            size=size,
            root_hash=root_hash,
            note=signer.sign(size, root_hash, moment),
            key_id=signer.key_id.hex(),
            created=moment,
        )
    )


def checkpoint_due(
    conn: Connection,
    size: int,
    every: int,
    seconds: float,
    moment: datetime,
    known: CheckpointRow | None = None,
) -> tuple[bool, CheckpointRow | None]:
    """(due?, the latest checkpoint as far as we know).

    `known` is a checkpoint this caller saw earlier. Checkpoints only ever get newer, so if even
    that one does not make a new checkpoint due, the real latest cannot either: the query is
    only needed when `known` says "due" (or is missing)."""
    if size == 0:
        return False, known
    if known is not None and not _due_after(known, size, every, seconds, moment):
        return False, known
    last = latest_checkpoint(conn)
    return (last is None or _due_after(last, size, every, seconds, moment)), last


def _due_after(last: CheckpointRow, size: int, every: int, seconds: float, now: datetime) -> bool:
    if last.size >= size:
        return False
    return size - last.size >= every or (now - last.created).total_seconds() >= seconds


def write_probe(conn: Connection, moment: datetime) -> None:
    """A real write, to learn whether the store accepts writes again."""
    changed = conn.execute(
        update(AuditHealthProbe).where(AuditHealthProbe.id == 1).values(checked_at=moment)
    ).rowcount
    if not changed:
        conn.execute(insert(AuditHealthProbe).values(id=1, checked_at=moment))


def append_and_checkpoint(
    conn: Connection,
    signer: CheckpointSigner,
    items: Sequence[tuple[str, str | None, bytes]],
    *,
    every: int,
    seconds: float,
    force: bool,
    known: CheckpointRow | None = None,
) -> tuple[list[ChainEntry], int, CheckpointRow | None, bool]:
    """One group commit's work under the chain lock.

    Returns (entries, new head seq, latest checkpoint known now, checkpointed?). `force` signs a
    checkpoint whenever the head moved past the last one; `known` is the latest checkpoint the
    caller saw (see `checkpoint_due`)."""
    lock_chain(conn)
    moment = datetime.now(UTC)
    head = read_head(conn)
    linked = append_entries(conn, head, items, moment)
    size, root = (linked[-1].seq, linked[-1].hash) if linked else head
    if force:
        known = None  # a forced checkpoint must not be skipped on an old belief
    due, latest = checkpoint_due(
        conn, size, 1 if force else every, 0.0 if force else seconds, moment, known
    )
    if due:
        add_checkpoint(conn, signer, size, root, moment)
        latest = CheckpointRow(size, root, moment)
    return linked, size, latest, due
