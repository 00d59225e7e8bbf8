"""The audit writer: group commit on one thread, fail closed, periodic signed checkpoints.

`record()` returns only after its entry is committed. All entries waiting at the moment the
writer thread is free go into one transaction (one fsync), so throughput grows with load while
each caller still waits for its own durable commit.

An entry enqueued with `keep=True` is one whose caller does not wait for its commit (queued
audit). A store failure does not drop it: it stays queued in order, the writer probes the store
until it takes writes again, and then commits it before anything newer. Only a writer closed
while the store is still down gives such entries up, and says so in the log.

An entry enqueued with `urgent=False` does not start a commit by itself: it waits for the next
urgent entry (it is committed first, being earlier in the chain) or for `LAZY_COMMIT_DELAY`.
A non-streamed call's `api.request` is such an entry: its answer waits for the completion
entry anyway, so both share one commit instead of two fsyncs in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine

from controlplane.audit import store
from controlplane.audit.chain import ChainEntry, canonical_json, check_kind
from controlplane.audit.checkpoint import (
    CheckpointSigner,
    SigningKeyFile,
    activate_staged_key,
    load_or_create_key,
    rotation_fields,
    stage_private_key,
)
from controlplane.audit.errors import AuditUnavailable
from controlplane.audit.pending import PendingEntry, resolve

log = logging.getLogger(__name__)

PROBE_INTERVAL = 0.5  # seconds between write probes while the store is unavailable
LAZY_COMMIT_DELAY = 0.05  # seconds a non-urgent entry waits for company before it commits alone


class AuditWriter:
    def __init__(
        self,
        engine: Engine,
        key_path: Path,
        *,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 60.0,
        origin: str = "sparkplane/audit",
        max_batch: int = 5000,
        max_pending: int = 100_000,
    ) -> None:
        self.engine = engine
        self.key_path = Path(key_path)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.origin = origin
        self.max_batch, self.max_pending = max_batch, max_pending
        self.healthy = False
        self.last_error: str | None = "audit writer not started"
        self._keys = SigningKeyFile(self.key_path, origin)
        self._queue: list[PendingEntry] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._conn: Connection | None = None
        self._dirty_since: float | None = None  # monotonic time of the first uncheckpointed write
        self._known_checkpoint: store.CheckpointRow | None = None  # saves a query per commit
        self._urgent = False  # the queue holds an entry someone waits for now
        self._lazy_since: float | None = None  # when the oldest queued non-urgent entry came
        self._sleeps_until = 0.0  # monotonic end of the thread's current sleep (0: awake)
        self._next_probe = 0.0  # monotonic time of the next write probe while unhealthy
        # (seq, hash) of the last entry of a failed commit that may have committed after all
        # (a connection lost during COMMIT), and its kept entries: the next commit looks, so
        # they are not appended twice.
        self._in_doubt: tuple[int, bytes, dict[PendingEntry, int]] | None = None
        self._commit_listeners: list[Callable[[int], None]] = []

    def on_commit(self, listener: Callable[[int], None]) -> None:
        """Call `listener(head seq)` on the writer thread after each commit that added entries
        (the SIEM feed wakes on it); it must return at once and never raise."""
        self._commit_listeners.append(listener)

    @property
    def signer(self) -> CheckpointSigner:
        """The current signing key (reloaded if the key file was rotated)."""
        return self._keys.signer()

    async def start(self) -> None:
        """Load (or create) the signing key and start the writer thread; probes the store once."""
        await asyncio.to_thread(load_or_create_key, self.key_path)
        await asyncio.to_thread(self._probe)
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Write what is queued, sign a final checkpoint, stop the thread."""
        if self._thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify()
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        self.healthy, self.last_error = False, "audit writer closed"

    async def record(self, kind: str, **fields: Any) -> int:
        """Append one entry; returns its seq once committed. `tenant` goes into the envelope
        (tenant exports and retention use it). AuditUnavailable if the store can't be written."""
        return await self.enqueue(kind, **fields)

    async def record_change(self, kind: str, **fields: Any) -> int:
        """`record` for a change already made (a tenant created, a session ended): the caller
        waits for the commit as usual, but if the store fails meanwhile the entry is not given
        up: it is kept, like the gateway's queued entries, and written first once the store is
        back, so the change never stays without its entry while this process runs.
        AuditUnavailable still reaches the caller, who tells the client."""
        try:
            return await self.record(kind, **fields)
        except AuditUnavailable:
            # A commit that failed while its COMMIT reached the database (a lost connection)
            # may record it twice: two entries rather than none.
            with contextlib.suppress(AuditUnavailable):  # closing, or the queue is full
                self.enqueue(kind, keep=True, **fields)
            raise

    def enqueue(
        self, kind: str, *, urgent: bool = True, keep: bool = False, **fields: Any
    ) -> asyncio.Future[int]:
        """`record` in two halves: the entry takes its place in the chain's order now (so a
        later entry can never come before it), the future resolves once it is committed.
        `urgent=False`: commit it with the next urgent entry, or within LAZY_COMMIT_DELAY (or at
        once after `expedite()`). AuditUnavailable at once if the store cannot be written; call
        on the event loop.

        `keep=True`: the caller will not wait for the commit. The entry is accepted even while
        the store is unavailable and survives store failures (see the module docstring); it
        is refused only if the writer is closing or its queue is full."""
        check_kind(kind)
        tenant = fields.pop("tenant", None)
        if tenant is not None and not isinstance(tenant, str):
            raise TypeError(f"audit field 'tenant' must be a string, not {type(tenant).__name__}")
        return self._enqueue(kind, tenant, canonical_json(fields), urgent=urgent, keep=keep)

    def check_writable(self) -> None:
        """AuditUnavailable unless the writer runs and the store takes writes (fail closed)."""
        self._check_running()
        if not self.healthy:
            raise AuditUnavailable(f"audit store unavailable: {self.last_error}")

    def _check_running(self) -> None:
        if self._thread is None or self._stopping:
            raise AuditUnavailable("audit writer is not running")

    def expedite(self) -> None:
        """Someone now waits for the queued entries: commit them without further delay."""
        with self._cond:
            if self._queue and not self._urgent:
                self._urgent = True
                self._cond.notify()

    async def checkpoint_now(self) -> int:
        """Commit and sign a checkpoint over the current head; returns its size."""
        return await self._submit("", None, b"", force_checkpoint=True)

    async def rotate_key(self) -> str:
        """Switch to a new signing key; the chain records it under the old key's checkpoint."""
        new_key = Ed25519PrivateKey.generate()
        rotation = canonical_json(rotation_fields(self.signer, new_key))
        await self._submit("audit.key_rotated", None, rotation, new_key=new_key)
        new_id = self.signer.key_id.hex()
        # A first checkpoint by the new key: an auditor holding only it can then verify it all.
        activated = canonical_json({"key_id": new_id})
        await self._submit("audit.key_activated", None, activated, force_checkpoint=True)
        return new_id

    async def _submit(self, kind: str, tenant: str | None, data: bytes, **extra: Any) -> int:
        return await self._enqueue(kind, tenant, data, **extra)

    def _enqueue(
        self,
        kind: str,
        tenant: str | None,
        data: bytes,
        *,
        urgent: bool = True,
        keep: bool = False,
        **extra: Any,
    ) -> asyncio.Future[int]:
        if keep:
            self._check_running()  # a kept entry is accepted while the store is down
        else:
            self.check_writable()
        loop = asyncio.get_running_loop()
        item = PendingEntry(kind, tenant, data, loop.create_future(), loop, keep=keep, **extra)
        with self._cond:
            if len(self._queue) >= self.max_pending:  # the store is too slow: refuse, don't grow
                raise AuditUnavailable(f"audit queue full ({self.max_pending} entries waiting)")
            self._queue.append(item)
            if not self.healthy:  # a kept entry, or one racing a failure: the next probe decides
                return item.future
            if urgent:
                self._urgent = True
                self._cond.notify()
            elif self._lazy_since is None:
                self._lazy_since = time.monotonic()
                if self._sleeps_until > self._lazy_since + LAZY_COMMIT_DELAY:
                    self._cond.notify()  # it would sleep past this entry's deadline
        return item.future

    def _run(self) -> None:
        while True:
            batch, finished = self._take_batch()
            try:
                if not self.healthy:
                    self._probe()
                if not self.healthy:
                    self._fail(batch)
                elif batch or finished or self._timer_due():
                    self._commit(batch, final=finished)
            except Exception as exc:  # never let the thread die with callers waiting
                self._mark_unavailable(exc)
                self._fail(batch)
            if finished:
                self._drop_connection(invalidate=False)
                return

    def _take_batch(self) -> tuple[list[PendingEntry], bool]:
        """Sleep until a commit is due; then (entries to commit, is this the final batch?)."""
        with self._cond:
            if not self._commit_due():
                timeout = self._wait_timeout()
                now = time.monotonic()
                self._sleeps_until = math.inf if timeout is None else now + timeout
                self._cond.wait(timeout)
                self._sleeps_until = 0.0
                if not self._commit_due():
                    return [], False  # woken to learn a deadline, or a timer: nothing to write
            batch = self._queue[: self.max_batch]
            del self._queue[: len(batch)]
            self._urgent = bool(self._queue)  # a backlog beyond max_batch goes on at once
            self._lazy_since = None
            return batch, self._stopping and not self._queue

    def _commit_due(self) -> bool:
        if not self.healthy:  # only kept entries wait in the queue now: probe on schedule
            return self._stopping or time.monotonic() >= self._next_probe
        if self._urgent or self._stopping or self._timer_due():
            return True
        since = self._lazy_since
        return since is not None and time.monotonic() - since >= LAZY_COMMIT_DELAY

    def _wait_timeout(self) -> float | None:
        if not self.healthy:
            return max(0.0, self._next_probe - time.monotonic())
        deadlines = []
        if self._dirty_since is not None:
            deadlines.append(self._dirty_since + self.checkpoint_seconds)
        if self._lazy_since is not None:
            deadlines.append(self._lazy_since + LAZY_COMMIT_DELAY)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _timer_due(self) -> bool:
        since = self._dirty_since
        return since is not None and time.monotonic() - since >= self.checkpoint_seconds

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self.engine.connect()
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA synchronous=FULL")  # fsync each group commit
                conn.commit()
            self._conn = conn
        return self._conn

    def _drop_connection(self, *, invalidate: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # it is being discarded anyway
            if invalidate:
                conn.invalidate()  # never hand a broken DBAPI connection back to the pool
            conn.close()

    def _mark_unavailable(self, exc: BaseException) -> None:
        self._drop_connection(invalidate=True)
        self.healthy = False
        self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self._next_probe = time.monotonic() + PROBE_INTERVAL

    def _probe(self) -> None:
        try:
            conn = self._connection()
            store.lock_chain(conn)
            store.write_probe(conn, datetime.now(UTC))
            conn.commit()
        except Exception as exc:
            self._mark_unavailable(exc)
            return
        with self._cond:
            self._urgent = bool(self._queue)  # kept entries go first, before anything newer
            self.healthy, self.last_error = True, None

    def _drop_committed(self, batch: list[PendingEntry]) -> list[PendingEntry]:
        """Kept entries of a commit that failed may be in the chain after all (a connection
        lost during COMMIT): if so they are settled, not appended a second time."""
        if self._in_doubt is None:
            return batch
        seq, entry_hash, kept = self._in_doubt
        conn = self._connection()
        try:
            store.lock_chain(conn)
            committed = store.has_entry(conn, seq, entry_hash)
        finally:
            conn.rollback()
        self._in_doubt = None
        if not committed:
            return batch
        resolve(list(kept), list(kept.values()))
        return [item for item in batch if item not in kept]

    def _commit(self, batch: list[PendingEntry], *, final: bool = False) -> None:
        signer, new_key = self.signer, None
        linked: list[ChainEntry] = []
        try:
            batch = self._drop_committed(batch)
            entries = [item for item in batch if item.kind]
            rotating = [item.new_key for item in entries if item.new_key is not None]
            forced = final or bool(rotating) or any(item.force_checkpoint for item in batch)
            conn = self._connection()
            linked, size, known, due = store.append_and_checkpoint(
                conn,
                signer,
                [(i.kind, i.tenant, i.data) for i in entries],
                every=self.checkpoint_every,
                seconds=self.checkpoint_seconds,
                force=forced or self._timer_due(),
                known=self._known_checkpoint,
            )
            if rotating:
                new_key = rotating[-1]
                stage_private_key(self.key_path, new_key)  # on disk before the chain names it
            conn.commit()
        except Exception as exc:
            self._mark_unavailable(exc)
            if linked:  # for all we know, the COMMIT itself may have succeeded
                kept = {i: e.seq for i, e in zip(entries, linked, strict=True) if i.keep}
                self._in_doubt = (linked[-1].seq, linked[-1].hash, kept) if kept else None
            self._fail(batch)
            return
        self._known_checkpoint = known
        if new_key is not None:
            activate_staged_key(self.key_path)  # the next signer() call loads it
        if due or not linked:
            self._dirty_since = None  # checkpointed, or nothing new from us to checkpoint
        elif self._dirty_since is None:
            self._dirty_since = time.monotonic()
        by_item = dict(zip(entries, (e.seq for e in linked), strict=True))
        resolve(batch, [by_item.get(item, size) for item in batch])
        if linked:
            for listener in self._commit_listeners:
                listener(size)

    def _fail(self, batch: list[PendingEntry]) -> None:
        """The store failed: every waiting caller learns it now; kept entries go back to the
        head of the queue (in order) unless the writer is closing."""
        error = AuditUnavailable(f"audit store unavailable: {self.last_error}")
        with self._cond:  # one decision: `close()` may set _stopping meanwhile
            waiting, give_up = [*batch, *self._queue], self._stopping
            self._queue = [] if give_up else [item for item in waiting if item.keep]
            self._urgent, self._lazy_since = False, None
        failed = waiting if give_up else [item for item in waiting if not item.keep]
        lost = sum(item.keep for item in failed)
        if lost:
            log.error("%d accepted audit entries were not written: %s", lost, self.last_error)
        resolve(failed, [error] * len(failed))
