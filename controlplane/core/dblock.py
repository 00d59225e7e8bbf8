"""Named locks that every process using one database sees, held as long as a process needs them.

- PostgreSQL: a session-level advisory lock on a connection kept for the purpose. Replicas on
  other machines see it; it is released when the holder lets go or its session ends (a crashed
  or killed process cannot leave it behind). The key includes the schema, so appliances (or
  tests) sharing one database in different schemas do not block each other.
- SQLite: `flock` on `<database file>.<name>.lock`; every process on the database is on this
  machine, and the kernel drops the lock with the process.

Shared holders coexist; an exclusive holder excludes everyone. Used for "one replica runs this
job at a time" (exclusive) and "the control plane is running" (shared by every server,
exclusive for `sparkplane restore`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from controlplane.core.db import advisory_lock_key


def sqlite_lock_path(engine: Engine, name: str) -> Path | None:
    """`<database file>.<name>.lock` for a file-backed SQLite engine, else None."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    path = Path(str(database))
    return path.with_name(f"{path.name}.{name}.lock")


class DatabaseLock:
    """One named lock on one database; `acquire` never waits."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine, self.name = engine, name
        self._conn: Connection | None = None
        self._fd: int | None = None
        self._key: int | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    def acquire(self, *, shared: bool = False) -> bool:
        """Take the lock now if nobody holds it in a conflicting mode; False otherwise."""
        if self.held:
            return True
        if self.engine.dialect.name == "postgresql":
            return self._acquire_advisory(shared)
        path = sqlite_lock_path(self.engine, self.name)
        if path is None:
            return True  # an in-memory database lives in one process: nothing to exclude
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _acquire_advisory(self, shared: bool) -> bool:
        conn = self.engine.connect()
        try:
            conn.commit()  # the session lock outlives transactions; hold none open
            schema = conn.execute(text("SELECT current_schema()")).scalar()
            key = advisory_lock_key(f"sparkplane.{self.name}.{schema}")
            function = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
            taken = bool(conn.execute(text(f"SELECT {function}(:key)"), {"key": key}).scalar())
            conn.commit()
        except Exception:
            conn.invalidate()
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        self._conn, self._key = conn, key
        return True

    def still_held(self) -> bool:
        """Whether the lock is still ours (a PostgreSQL session can be lost with its lock)."""
        if self._conn is None:
            return self._fd is not None
        try:
            self._conn.execute(text("SELECT 1")).scalar()
            self._conn.commit()
        except Exception:
            self._drop(invalidate=True)
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
        self._drop(invalidate=False)

    def _drop(self, *, invalidate: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # a lost session has lost its lock already
            if invalidate:
                conn.invalidate()
            else:
                conn.execute(text("SELECT pg_advisory_unlock_all()"))
                conn.commit()
            conn.close()

    @property
    def connection(self) -> Connection | None:
        """The PostgreSQL session that holds the lock (work done on it fails if it is lost)."""
        return self._conn


RUNNING_LOCK = "running"


def hold_running_lock(engine: Engine) -> DatabaseLock:
    """Every serving control plane holds this lock shared for its whole life; `sparkplane
    restore` takes it exclusively, so neither can start while the other runs."""
    lock = DatabaseLock(engine, RUNNING_LOCK)
    if not lock.acquire(shared=True):
        raise RuntimeError(
            "the database is being restored (`sparkplane restore` holds it): "
            "start the control plane again once the restore has finished"
        )
    return lock
