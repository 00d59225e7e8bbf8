"""Failed authentication per client address: past an allowance, 429 with Retry-After.

Anyone could send made-up keys as fast as the service answered (issue 17, finding 5). Each
refused credential is counted for its address in the database (`auth_failure_counts`), so that
every replica on PostgreSQL (and every process on one SQLite file) sees the same count, like the
console's sign-in throttle (`controlplane/console/throttle.py`). Past
SPARKPLANE_AUTH_FAILURES_PER_ADDRESS in one SPARKPLANE_AUTH_FAILURE_WINDOW the address is blocked
until its window ends: every request from it, with any credential, is then answered 429 before
anything is checked. The block is also kept in memory, so a blocked address costs no database
work; a replica that has not seen it yet learns it from the shared count at its first failure
from that address.

The valid-key hot path pays one truth test of an empty dict (`blocked`) while nobody is blocked.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from controlplane.api.models import AuthFailureCount
from controlplane.core.db import session_factory, utcnow

log = logging.getLogger(__name__)


def charge(db: Session, address: str, window: timedelta, allowance: int,
           now: datetime | None = None) -> float:  # fmt: skip
    """Count one failure of `address` under the row's lock; the seconds it must now wait (0:
    still within its allowance). Commits."""
    now = now or utcnow()
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(AuthFailureCount).values(address=address, failures=0, window_started_at=now)
    db.execute(  # a no-op upsert: creates the row and takes its write lock
        statement.on_conflict_do_update(
            index_elements=["address"], set_={"failures": AuthFailureCount.failures}
        )
    )
    row = db.get(AuthFailureCount, address, populate_existing=True)
    assert row is not None
    if now - row.window_started_at >= window:
        row.failures, row.window_started_at, row.blocked_until = 0, now, None
    row.failures += 1
    if row.failures > allowance:
        row.blocked_until = row.window_started_at + window
    wait = (row.blocked_until - now).total_seconds() if row.blocked_until else 0.0
    db.commit()
    return max(wait, 0.0)


class AuthFailureLimit:
    """The per-address allowance of refused credentials, with its in-memory blocks."""

    def __init__(self, engine: Engine, window: float, allowance: int) -> None:
        self.sessions = session_factory(engine)
        self.window = timedelta(seconds=window)
        self.allowance = allowance
        self.blocked: dict[str, float] = {}  # address -> monotonic time its block ends

    def wait(self, address: str) -> int:
        """Seconds `address` must still wait (0: not blocked). Call only when `blocked`."""
        until = self.blocked.get(address)
        if until is None:
            return 0
        left = until - time.monotonic()
        if left <= 0:
            del self.blocked[address]
            return 0
        return max(1, math.ceil(left))

    async def failed(self, address: str) -> int:
        """Count a refused credential of `address`; the seconds it must now wait (0: none)."""

        def work() -> float:
            with self.sessions() as db:
                return charge(db, address[:64], self.window, self.allowance)

        try:
            wait = await run_in_threadpool(work)
        except SQLAlchemyError as exc:
            # The refusal stands without its count: a database fault must not turn 401 into 500.
            log.warning("could not count a refused credential from %s: %s", address, exc)
            return 0
        if wait <= 0:
            return 0
        self.blocked[address] = time.monotonic() + wait
        return max(1, math.ceil(wait))
