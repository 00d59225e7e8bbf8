"""The SIEM feed: audit entries and checkpoints streamed, as they commit, to one target.

One thread reads the chain from the database after its cursor, in seq order, with each signed
checkpoint right after the entry it covers, and writes them to the transport. It wakes on every
local group commit (`AuditWriter.on_commit`) and looks every POLL seconds anyway (other replicas'
commits, timer checkpoints). It never touches the request path: the gateway only sets an event,
and a slow or dead receiver only makes the backlog grow.

Delivery is at least once:
- file: an item is delivered once written and fsynced; UDP: once sent (best effort: UDP has no
  acknowledgement and loses what the receiver does not take);
- TCP and TLS: syslog has no acknowledgement of its own. An item counts as delivered once the
  receiver's TCP stack has acknowledged every byte up to it (the socket's send queue is empty)
  and the connection has then stayed up SETTLE seconds, time for a receiver that reads its
  socket to have read it. When the connection breaks, everything not yet delivered is sent
  again. Stopping half-closes the connection and waits for the receiver to close its side,
  which confirms everything it was sent.
- The delivered position is saved in `audit_feed_cursors` (at most once a second, and at stop)
  and the feed resumes from it after a restart. A SIEM may see an entry twice (same seq and
  hash), never miss one, unless retention prunes entries the feed has not delivered yet.

One sender at a time: the sender holds the database lock `siem-feed` (core/dblock.py); other
replicas stand by, try to take it every STANDBY_RETRY seconds, and resume from the shared cursor.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, func, insert, select, update

from controlplane.audit.feed.messages import FeedItem, checkpoint_item, entry_item
from controlplane.audit.feed.transports import Transport
from controlplane.audit.models import AuditCheckpoint, AuditEntry, AuditFeedCursor
from controlplane.core.db import utcnow
from controlplane.core.dblock import DatabaseLock

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between looks at the chain when no local commit woke the feed
SETTLE = 2.0  # seconds an acknowledged item must stay on a live connection to count delivered
BATCH = 500  # entries per read and per write
COALESCE = 0.1  # seconds a woken feed waits for more commits before it reads
CATCH_UP_PAUSE = 0.05  # seconds between full batches while a backlog drains
SAVE_EVERY = 1.0  # seconds between cursor writes
STANDBY_RETRY = 5.0  # seconds between a standby replica's attempts to become the sender
LOCK_CHECK = 5.0  # seconds between checks that the sender still holds its lock
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0  # reconnect delays
ABORT_AFTER = 1.0  # seconds stop() lets a send finish before cutting the connection
STOP_TIMEOUT = 10.0


class Position(NamedTuple):
    entry_seq: int  # every entry up to here
    checkpoint_size: int  # every checkpoint up to here


@dataclass(frozen=True)
class FeedStatus:
    target: str
    role: str = "starting"  # sender | standby | stopped
    connected: bool = False
    head_seq: int = 0
    delivered_seq: int = 0
    sent: int = 0  # messages written, resends included
    last_delivery: datetime | None = None
    last_error: str | None = None

    @property
    def backlog(self) -> int:
        """Entries committed but not yet delivered."""
        return max(0, self.head_seq - self.delivered_seq)


class SiemFeed:
    def __init__(self, engine: Engine, transport: Transport, name: str = "siem") -> None:
        self.engine, self.transport, self.name = engine, transport, name
        self._lock = DatabaseLock(engine, "siem-feed")
        self._status = FeedStatus(str(transport.target))
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._position = self._delivered = self._saved = Position(0, 0)
        self._sent_at: collections.deque[tuple[float, Position]] = collections.deque()
        self._acked_at: collections.deque[tuple[float, Position]] = collections.deque()
        self._connected = self._sending = False
        self._head_hint = 0  # the head as the local audit writer last reported it
        self._backoff, self._next_connect = BACKOFF_MIN, 0.0
        self._next_lock_try = self._lock_checked = self._last_save = 0.0

    @property
    def status(self) -> FeedStatus:
        status = self._status
        if self._head_hint > status.head_seq:  # local commits since the feed last looked
            status = replace(status, head_seq=self._head_hint)
        return status

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="siem-feed", daemon=True)
        self._thread.start()

    def wake(self, head_seq: int) -> None:
        """A commit reached `head_seq` (called on the audit writer's thread: no work here)."""
        self._head_hint = head_seq
        self._wake.set()

    def stop(self) -> None:
        """Deliver what the receiver confirms, save the cursor, let another replica take over."""
        self._stopping.set()
        self._wake.set()
        if self._thread is None:
            return
        self._thread.join(ABORT_AFTER)
        if self._thread.is_alive() and self._sending:  # a receiver that stopped reading
            self.transport.abort()
        self._thread.join(STOP_TIMEOUT)
        self._thread = None

    def _set(self, **changes: Any) -> None:
        self._status = replace(self._status, **changes)  # readers see one consistent object

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception as exc:  # the database went away, or a bug: back off, go on
                log.warning("SIEM feed: %s", exc)
                self._set(last_error=f"{type(exc).__name__}: {exc}")
                self._disconnect(str(exc))
                self._stopping.wait(self._backoff)
        self._finish()

    def _step(self) -> None:
        if not self._lead():
            self._stopping.wait(STANDBY_RETRY)
            return
        if not self._connected and not self._connect():
            # not woken by commits meanwhile: nothing can be sent before the next attempt
            self._stopping.wait(max(0.0, self._next_connect - time.monotonic()))
            return
        self._settle()
        self._save()
        sent = self._send_batch()
        if sent == BATCH:
            self._stopping.wait(CATCH_UP_PAUSE)  # a backlog: leave the CPU to the gateway too
            return
        # Caught up: wait for a commit, then a little longer, so that the commits right behind
        # it come along in the same read (about ten reads a second under load, not one each).
        if self._wake.wait(self._idle_time()):
            self._wake.clear()
            self._stopping.wait(COALESCE)

    def _idle_time(self) -> float:
        if self._sent_at:
            return 0.05  # waiting for the receiver's acknowledgement
        if self._acked_at:
            return min(POLL, max(0.05, self._acked_at[0][0] + SETTLE - time.monotonic()))
        return POLL

    # -- leadership ------------------------------------------------------------------------

    def _lead(self) -> bool:
        now = time.monotonic()
        if self._lock.held:
            if now - self._lock_checked >= LOCK_CHECK:
                self._lock_checked = now
                if not self._lock.still_held():
                    log.warning("SIEM feed: lost the sender lock; standing by")
                    self._disconnect("lost the sender lock")
                    self._set(role="standby")
                    return False
            return True
        if now < self._next_lock_try:
            return False
        self._next_lock_try = now + STANDBY_RETRY
        if not self._lock.acquire():
            cursor = self._load_cursor()
            self._set(role="standby", delivered_seq=cursor.entry_seq, head_seq=self._head())
            return False
        self._lock_checked = now
        self._position = self._delivered = self._saved = self._load_cursor()
        self._set(role="sender", delivered_seq=self._delivered.entry_seq)
        log.info("SIEM feed to %s: sending from entry %d", self.transport.target,
                 self._position.entry_seq + 1)  # fmt: skip
        return True

    # -- connection ------------------------------------------------------------------------

    def _connect(self) -> bool:
        now = time.monotonic()
        if now < self._next_connect:
            self._set(head_seq=self._head())
            return False
        try:
            self.transport.open()
        except (OSError, ValueError) as exc:
            self._next_connect = now + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            self._set(connected=False, last_error=f"cannot connect: {exc}", head_seq=self._head())
            return False
        self._connected, self._backoff = True, BACKOFF_MIN
        self._set(connected=True, last_error=None)
        return True

    def _disconnect(self, reason: str) -> None:
        """Drop the connection; everything not delivered is sent again from the cursor."""
        if self._connected:
            self.transport.close()
            self._connected = False
            self._next_connect = time.monotonic() + self._backoff
            self._set(connected=False, last_error=reason)
        self._position = self._delivered
        self._sent_at.clear()
        self._acked_at.clear()

    def _settle(self) -> None:
        if self.transport.confirms_on_send:
            return
        if not self.transport.alive():
            self._disconnect("the receiver closed the connection")
            return
        now = time.monotonic()
        if self._sent_at and self.transport.unacknowledged() == 0:
            self._acked_at.extend((now, position) for _, position in self._sent_at)
            self._sent_at.clear()
        while self._acked_at and now - self._acked_at[0][0] >= SETTLE:
            self._delivered_to(self._acked_at.popleft()[1])

    def _delivered_to(self, position: Position) -> None:
        self._delivered = position
        self._set(delivered_seq=position.entry_seq, last_delivery=utcnow())

    # -- reading and sending ---------------------------------------------------------------

    def _send_batch(self) -> int:
        """Send what follows the position; returns how many entries were read."""
        items, head = self._read(self._position)
        self._set(head_seq=head)
        if not items:
            return 0
        frames = [self.transport.frame(item) for item in items]
        self._sending = True
        try:
            self.transport.send(frames)
        except (OSError, ValueError) as exc:
            self._disconnect(f"send failed: {exc}")
            return 0
        finally:
            self._sending = False
        position = self._position
        for item in items:
            if item.is_checkpoint:
                position = position._replace(checkpoint_size=item.entry_seq)
            else:
                position = position._replace(entry_seq=item.entry_seq)
        self._position = position
        self._set(sent=self._status.sent + len(items))
        if self.transport.confirms_on_send:
            self._delivered_to(position)
        else:
            self._sent_at.append((time.monotonic(), position))
        return sum(not item.is_checkpoint for item in items)

    def _read(self, after: Position) -> tuple[list[FeedItem], int]:
        """Up to BATCH entries after `after`, the checkpoints up to the last of them, in order,
        and the chain's head seq."""
        columns = (AuditEntry.seq, AuditEntry.time, AuditEntry.kind, AuditEntry.tenant,
                   AuditEntry.envelope, AuditEntry.data, AuditEntry.hash)  # fmt: skip
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*columns)
                .where(AuditEntry.seq > after.entry_seq)
                .order_by(AuditEntry.seq)
                .limit(BATCH)
            ).all()
            upto = int(rows[-1][0]) if rows else after.entry_seq
            checkpoints = conn.execute(
                select(AuditCheckpoint.size, AuditCheckpoint.root_hash, AuditCheckpoint.note,
                       AuditCheckpoint.created)
                .where(AuditCheckpoint.size > after.checkpoint_size, AuditCheckpoint.size <= upto)
                .order_by(AuditCheckpoint.size)
            ).all()  # fmt: skip
            head = upto if len(rows) < BATCH else self._head(conn)
        if rows and after.entry_seq and int(rows[0][0]) > after.entry_seq + 1:
            log.warning("SIEM feed: entries %d..%d were pruned before they were delivered",
                        after.entry_seq + 1, int(rows[0][0]) - 1)  # fmt: skip
        items = [
            entry_item(int(seq), moment, kind, tenant, bytes(envelope),
                       None if data is None else bytes(data), bytes(entry_hash))
            for seq, moment, kind, tenant, envelope, data, entry_hash in rows
        ]  # fmt: skip
        items += [
            checkpoint_item(int(size), bytes(root), note, created)
            for size, root, note, created in checkpoints
        ]
        items.sort(key=lambda item: item.position)
        return items, head

    def _head(self, conn: Connection | None = None) -> int:
        if conn is None:
            with self.engine.connect() as fresh:
                return self._head(fresh)
        return int(conn.execute(select(func.max(AuditEntry.seq))).scalar() or 0)

    # -- the cursor ------------------------------------------------------------------------

    def _load_cursor(self) -> Position:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(AuditFeedCursor.entry_seq, AuditFeedCursor.checkpoint_size).where(
                    AuditFeedCursor.name == self.name
                )
            ).first()
        return Position(0, 0) if row is None else Position(int(row[0]), int(row[1]))

    def _save(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._delivered == self._saved or (not force and now - self._last_save < SAVE_EVERY):
            return
        delivered = self._delivered
        values = {"entry_seq": delivered.entry_seq,
                  "checkpoint_size": delivered.checkpoint_size, "updated": utcnow()}  # fmt: skip
        # On PostgreSQL the write goes through the session that holds the sender lock: a
        # sender that lost its lock (and its session) cannot move the shared cursor.
        conn = self._lock.connection
        if conn is None:
            with self.engine.begin() as fresh:
                _upsert_cursor(fresh, self.name, values)
        else:
            try:
                _upsert_cursor(conn, self.name, values)
                conn.commit()
            except Exception:
                conn.rollback()
                raise
        self._saved, self._last_save = self._delivered, now

    def _finish(self) -> None:
        if self._connected and not self.transport.confirms_on_send:
            if self.transport.close(graceful=True):
                self._delivered_to(self._position)  # the receiver read all of it
            self._connected = False
        elif self._connected:
            self.transport.close()
            self._connected = False
        try:
            if self._lock.held:
                self._save(force=True)
        except Exception as exc:
            log.warning("SIEM feed: cursor not saved at stop: %s", exc)
        self._lock.release()
        self._set(role="stopped", connected=False)


def _upsert_cursor(conn: Connection, name: str, values: dict[str, object]) -> None:
    changed = conn.execute(
        update(AuditFeedCursor).where(AuditFeedCursor.name == name).values(**values)
    ).rowcount
    if not changed:
        conn.execute(insert(AuditFeedCursor).values(name=name, **values))
