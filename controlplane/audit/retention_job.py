"""The scheduled retention job: every tenant's `retention_days` applied once per interval.

It runs inside the control plane, not from a systemd timer: the service already holds the
database settings and the audit signing key the prune must sign its checkpoints with (a timer
would be a second process with access to that key), the console shows the schedule from the
same state the job decides by, it works the same on the appliance, in `sparkplane demo` and in
tests, and on PostgreSQL one replica runs it at a time under an advisory lock, which a timer on
each box would need anyway. When the service is down nothing is written that could be pruned;
the last run is kept in the database, so a run that fell due meanwhile happens shortly after
the next start, and restarts never postpone it.

`tick()` is one decision (run if due, else nothing); the loop only calls it and sleeps. Tests
drive `tick()` with their own clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, insert, select

from controlplane.audit.checkpoint import CheckpointSigner
from controlplane.audit.models import AuditRetentionRun
from controlplane.audit.retention import apply_retention
from controlplane.core.db import utcnow
from controlplane.core.dblock import DatabaseLock

log = logging.getLogger(__name__)

LOCK_NAME = "audit-retention"
STARTUP_DELAY = 60.0  # seconds: a run that is due at start waits until start-up is over
RETRY_AFTER = timedelta(hours=1)  # after a failed run
MAX_SLEEP = 3600.0  # re-read the schedule at least hourly (another replica may have run)
REASON = "retention schedule"


@dataclass(frozen=True)
class RetentionRun:
    started: datetime
    finished: datetime
    cut: int
    deleted: int
    redacted: int
    error: str | None


class RetentionJob:
    def __init__(
        self,
        engine: Engine,
        signer: Callable[[], CheckpointSigner],
        policies: Callable[[], Mapping[str, int]],
        *,
        default_days: int,
        interval: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """`policies()` gives each tenant's retention in days; `default_days` covers entries
        of no tenant (admin changes, installer events) and of tenants that no longer exist."""
        self.engine, self.signer, self.policies = engine, signer, policies
        self.default_days, self.interval, self.clock = default_days, interval, clock
        self.last: RetentionRun | None = None  # as last read or run here (metrics)

    def last_run(self) -> RetentionRun | None:
        table = AuditRetentionRun
        with self.engine.connect() as conn:
            row = conn.execute(
                select(table.started, table.finished, table.cut, table.deleted, table.redacted,
                       table.error).order_by(table.id.desc()).limit(1)
            ).first()  # fmt: skip
        self.last = None if row is None else RetentionRun(*row)
        return self.last

    def next_due(self, last: RetentionRun | None) -> datetime:
        """When the next run falls due after `last` (now, if it never ran)."""
        if last is None:
            return self.clock()
        wait = min(self.interval, RETRY_AFTER) if last.error else self.interval
        return last.finished + wait

    def tick(self) -> RetentionRun | None:
        """Run retention if it is due and no other replica is running it; the run, or None."""
        lock = DatabaseLock(self.engine, LOCK_NAME)
        if not lock.acquire():
            return None  # another replica is running it right now
        try:
            # Read under the lock: a replica that just finished a run has recorded it.
            if self.clock() < self.next_due(self.last_run()):
                return None
            return self._run()
        finally:
            lock.release()

    def _run(self) -> RetentionRun:
        started = self.clock()
        cut = deleted = redacted = 0
        error = None
        try:
            result = apply_retention(
                self.engine, self.signer(), default_days=self.default_days,
                tenant_days=self.policies(), now=started, reason=REASON,
            )  # fmt: skip
            cut, deleted, redacted = result.cut, result.deleted, sum(result.redacted.values())
        except Exception as exc:  # recorded and retried; the service goes on
            error = f"{type(exc).__name__}: {exc}"
            log.error("scheduled audit retention failed: %s", error)
        run = RetentionRun(started, self.clock(), cut, deleted, redacted, error)
        with self.engine.begin() as conn:
            conn.execute(insert(AuditRetentionRun).values(**run.__dict__))
        self.last = run
        if error is None:
            log.info("audit retention: cut at %d, %d deleted, %d redacted", cut, deleted, redacted)
        return run

    async def run_forever(self, startup_delay: float = STARTUP_DELAY) -> None:
        """The schedule: a tick whenever a run falls due (checked at least hourly)."""
        await asyncio.sleep(startup_delay)
        while True:
            try:
                await asyncio.to_thread(self.tick)
                due = self.next_due(await asyncio.to_thread(self.last_run))
                delay = (due - self.clock()).total_seconds()
            except Exception as exc:  # the database is down: try again later
                log.warning("audit retention schedule: %s", exc)
                delay = RETRY_AFTER.total_seconds()
            await asyncio.sleep(min(max(delay, 1.0), MAX_SLEEP))
