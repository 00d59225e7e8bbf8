"""Tenant-key authentication with a cache that never outlives a revocation.

Every key or tenant change bumps an epoch when it commits (see store.py). Each request reads
the epoch and uses cached keys only if they were loaded at the current one. With SQLite the epoch
is a shared-memory counter next to the database file (epoch.py: a memory read); with
PostgreSQL it is the `auth_epoch` row, read with one async round trip shared by all requests that
arrive while it is in flight. So a revoked key fails on the very next request on every replica,
whether it was revoked through the API, the console or the CLI, and a steady state costs no key
lookup at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, joinedload

from controlplane.core.db import utcnow
from controlplane.core.errors import DomainError
from controlplane.core.security import hash_api_key, looks_like_api_key
from controlplane.tenancy.epoch import EpochCounter, epoch_path
from controlplane.tenancy.models import ApiKey
from controlplane.tenancy.policy import TenantPolicy

MAX_CACHED_KEYS = 10_000


class AuthFailed(DomainError):
    """A credential refused: 401 (missing, unknown, revoked, expired) or 403 (tenant disabled)."""

    def __init__(
        self, status: int, code: str, message: str, principal: KeyPrincipal | None = None
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.principal = principal  # the key's owner, when the key exists (revoked, expired...)


@dataclass(frozen=True)
class KeyPrincipal:
    key_id: int
    key_prefix: str
    tenant: TenantPolicy
    expires_at: datetime | None
    revoked: bool


class KeyAuthenticator:
    def __init__(self, engine: Engine, pepper: bytes) -> None:
        self._engine = engine
        self._pepper = pepper
        self._cache: dict[str, KeyPrincipal | None] = {}
        self._cache_epoch = -1
        self._counter: EpochCounter | None = None
        self._pg: psycopg.AsyncConnection[Any] | None = None
        self._conninfo = ""
        self._next_round: asyncio.Future[int] | None = None
        self._runner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        path = epoch_path(self._engine.url)
        if path is not None:
            self._counter = EpochCounter(path)
        else:
            url = self._engine.url.set(drivername="postgresql")
            self._conninfo = url.render_as_string(hide_password=False)
            self._pg = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._counter is not None:
            self._counter.close()
        if self._pg is not None:
            await self._pg.close()

    async def authenticate(self, presented: str | None) -> KeyPrincipal:
        if not presented:
            raise AuthFailed(
                401, "missing_api_key", "no API key given: send 'Authorization: Bearer <key>'"
            )
        if not looks_like_api_key(presented):
            raise AuthFailed(401, "invalid_api_key", "the API key is not valid")
        key_hash = hash_api_key(self._pepper, presented)
        try:
            epoch = await self.current_epoch()
        except psycopg.Error:
            raise AuthFailed(
                503, "database_unavailable", "the key database cannot be reached; try again"
            ) from None
        if epoch != self._cache_epoch:
            self._cache.clear()
            self._cache_epoch = epoch
        if key_hash in self._cache:
            principal = self._cache[key_hash]
        else:
            try:
                principal = await asyncio.to_thread(self._load, key_hash)
            except OperationalError:
                raise AuthFailed(
                    503, "database_unavailable", "the key database cannot be reached; try again"
                ) from None
            if self._cache_epoch == epoch:  # an epoch change while loading drops the result
                if len(self._cache) >= MAX_CACHED_KEYS:
                    self._cache.clear()
                self._cache[key_hash] = principal
        return self._check(principal)

    @staticmethod
    def _check(principal: KeyPrincipal | None) -> KeyPrincipal:
        if principal is None:
            raise AuthFailed(401, "invalid_api_key", "the API key is not valid")
        if principal.revoked:
            raise AuthFailed(401, "revoked_api_key", "the API key has been revoked", principal)
        if principal.expires_at is not None and principal.expires_at <= utcnow():
            raise AuthFailed(401, "expired_api_key", "the API key has expired", principal)
        if principal.tenant.disabled:
            message = f"tenant {principal.tenant.name!r} is disabled"
            raise AuthFailed(403, "tenant_disabled", message, principal)
        return principal

    def _load(self, key_hash: str) -> KeyPrincipal | None:
        with Session(self._engine) as session:
            query = select(ApiKey).options(joinedload(ApiKey.tenant))
            key = session.scalar(query.where(ApiKey.key_hash == key_hash))
            if key is None:
                return None
            return KeyPrincipal(
                key_id=key.id,
                key_prefix=key.prefix,
                tenant=TenantPolicy.from_row(key.tenant),
                expires_at=key.expires_at,
                revoked=key.revoked_at is not None,
            )

    async def current_epoch(self) -> int:
        if self._counter is not None:
            return self._counter.read()
        # PostgreSQL: join the next read that *starts* after this request arrived, so a
        # revocation committed before the request is always seen, with one query per round.
        if self._next_round is None:
            self._next_round = asyncio.get_running_loop().create_future()
            if self._runner is None or self._runner.done():
                self._runner = asyncio.create_task(self._pg_rounds(), name="auth-epoch")
        return await asyncio.shield(self._next_round)

    async def _pg_rounds(self) -> None:
        while self._next_round is not None:
            round_future, self._next_round = self._next_round, None
            try:
                if self._pg is None or self._pg.closed or self._pg.broken:  # reconnect
                    self._pg = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True
                    )
                cursor = await self._pg.execute("SELECT value FROM auth_epoch WHERE id = 1")
                row = await cursor.fetchone()
            except psycopg.Error as exc:
                round_future.set_exception(exc)
                round_future.exception()  # retrieved: waiters that left must not log it
            else:
                round_future.set_result(int(row[0]) if row else 0)
