"""A replica's connections to the shared PostgreSQL: one per role, heartbeat, LISTEN, background.

Used by `coordinated.CoordinatedAdmission`. Each role (admit, release, heartbeat, listen) has
its own autocommit connection so that a slow release never queues behind an admission, and a
broken connection is reopened on next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
from sqlalchemy.engine import URL

from controlplane.admission.pg_schema import ADMIT_FUNCTION, HEARTBEAT_SQL, NOTIFY_CHANNEL

log = logging.getLogger(__name__)

CLOSE_GRACE_SECONDS = 5.0


class ReplicaLink:
    def __init__(self, url: URL, replica_id: str, lease_ttl: float) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.replica_id = replica_id
        self.lease_ttl = lease_ttl
        self._conns: dict[str, psycopg.AsyncConnection[Any]] = {}
        self._connecting = asyncio.Lock()
        self._loops: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self, on_notify: Callable[[], None]) -> None:
        """Install the admission function, register this replica, start heartbeat and LISTEN."""
        conn = await self.conn("admit")
        async with conn.transaction():  # replicas starting together must not race on DDL
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sparkplane_schema'))")
            await conn.execute(ADMIT_FUNCTION)
        await conn.execute(HEARTBEAT_SQL, {"replica": self.replica_id})
        self._loops.append(asyncio.create_task(self._heartbeat_loop(), name="replica-heartbeat"))
        self._loops.append(asyncio.create_task(self._listen_loop(on_notify), name="replica-listen"))

    def add_loop(self, loop: Coroutine[Any, Any, None], name: str) -> None:
        self._loops.append(asyncio.create_task(loop, name=name))

    async def close(self) -> None:
        """Stop the loops, finish background statements, hand back this replica's leases."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._background:  # releases in flight; a database that is down must not hang us
            _, stuck = await asyncio.wait(self._background, timeout=CLOSE_GRACE_SECONDS)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        with contextlib.suppress(psycopg.Error):
            conn = await self.conn("admit")
            for table in ("admission_leases", "admission_replicas"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE replica_id = %s",  # noqa: S608 - fixed names
                    [self.replica_id],
                )
        for conn in self._conns.values():
            await conn.close()

    async def conn(self, role: str) -> psycopg.AsyncConnection[Any]:
        async with self._connecting:
            conn = self._conns.get(role)
            if conn is None or conn.closed or conn.broken:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                # Leases are short-lived: a commit need not wait for the WAL flush. After a
                # database crash the last few ms of leases may be gone (their slots count as free
                # until those requests end), never the other way round.
                await conn.execute("SET synchronous_commit = off")
                self._conns[role] = conn
            return conn

    async def execute(self, role: str, sql: str, params: Any) -> None:
        conn = await self.conn(role)
        await conn.execute(sql, params)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a statement in the background (kept referenced; awaited by `close`)."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _listen_loop(self, on_notify: Callable[[], None]) -> None:
        while True:
            try:
                conn = await self.conn("listen")
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                async for _ in conn.notifies():
                    on_notify()
            except psycopg.Error as exc:
                log.warning("admission LISTEN connection lost: %s", exc)
                await asyncio.sleep(1.0)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                await self.execute("heartbeat", HEARTBEAT_SQL, {"replica": self.replica_id})
            except psycopg.Error as exc:
                log.warning("admission heartbeat failed: %s", exc)
