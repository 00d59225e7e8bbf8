"""Admin operations outside the server: what the CLI and `sparkplane demo` call.

Each function opens the same database as `sparkplane serve` (from the same settings), makes
its change through `controlplane.tenancy.store` and writes the `admin.<action>` audit event, so a
change made from the shell is as visible and as audited as one made in the console.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from controlplane.audit.bootstrap import audited_database
from controlplane.audit.writer import AuditWriter
from controlplane.core.config import Settings
from controlplane.core.db import init_db, make_engine, session_factory
from controlplane.core.security import load_or_create_pepper
from controlplane.tenancy import store
from controlplane.tenancy.models import ApiKeyPublic, TenantCreate, TenantPublic, TenantUpdate

T = TypeVar("T")


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@dataclass
class AdminContext:
    sessions: sessionmaker[Session]
    pepper: bytes
    audit: AuditWriter
    actor: str
    actor_role: str = "admin"

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a worker thread: the sync ORM never blocks the event loop."""

        def call() -> T:
            with self.sessions() as session:
                return work(session)

        return await asyncio.to_thread(call)

    def ensure_audit_writable(self) -> None:
        """Refuse a change before committing it when it could not be audited (fail closed):
        AuditUnavailable."""
        self.audit.check_writable()

    async def record(
        self, action: str, tenant: str, target: str, before: Any = None, after: Any = None
    ) -> None:
        """The `admin.<action>` event of a tenant or key change (public fields only), once the
        change is committed: kept if the store fails meanwhile (AuditWriter.record_change)."""
        await self.audit.record_change(
            f"admin.{action}",
            actor=self.actor,
            actor_role=self.actor_role,
            target=target,
            tenant=tenant,
            before=_jsonable(before),
            after=_jsonable(after),
        )


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


@asynccontextmanager
async def admin_context(
    settings: Settings, actor: str | None = None
) -> AsyncIterator[AdminContext]:
    async with audited_database(settings) as database:
        yield AdminContext(
            session_factory(database.engine),
            load_or_create_pepper(settings.data_dir),
            database.audit,
            actor or cli_actor(),
        )


async def create_tenant_async(
    ctx: AdminContext, spec: TenantCreate, *, system: bool = False
) -> TenantPublic:
    ctx.ensure_audit_writable()
    made = await ctx.run(lambda s: store.create_tenant(s, spec, system=system))
    tenant = store.tenant_public(made)
    await ctx.record("tenant_create", tenant.name, tenant.name, after=tenant)
    return tenant


async def update_tenant_async(ctx: AdminContext, name: str, changes: TenantUpdate) -> TenantPublic:
    ctx.ensure_audit_writable()
    before, row = await ctx.run(lambda s: store.update_tenant(s, name, changes))
    after = store.tenant_public(row)
    diff = store.changed_fields(before.model_dump(mode="json"), after.model_dump(mode="json"))
    diff.pop("updated_at", None)
    action = (
        "tenant_update"
        if set(diff) != {"disabled"}
        else ("tenant_disable" if after.disabled else "tenant_enable")
    )
    await ctx.record(
        action,
        name,
        name,
        before={k: v[0] for k, v in diff.items()},
        after={k: v[1] for k, v in diff.items()},
    )
    return after


async def create_key_async(
    ctx: AdminContext, tenant: str, *, expires_days: int | None = None, name: str = ""
) -> tuple[ApiKeyPublic, str]:
    ctx.ensure_audit_writable()

    def work(session: Session) -> tuple[ApiKeyPublic, str]:
        key, secret = store.issue_key(
            session, ctx.pepper, tenant, name=name, expires_days=expires_days
        )
        return store.key_public(key), secret

    public, secret = await ctx.run(work)
    await ctx.record("key_create", tenant, f"{tenant}/key/{public.id}", after=public)
    return public, secret


async def revoke_key_async(ctx: AdminContext, key_id: int) -> ApiKeyPublic:
    ctx.ensure_audit_writable()

    def work(session: Session) -> tuple[ApiKeyPublic, ApiKeyPublic]:
        before, key = store.revoke_key(session, key_id)
        return before, store.key_public(key)

    before, after = await ctx.run(work)
    if before.revoked_at is None:
        target = f"{after.tenant}/key/{key_id}"
        await ctx.record("key_revoke", after.tenant, target, before=before, after=after)
    return after


# ---- synchronous entry points for the CLI and `sparkplane demo` -----------------------------


def _run(settings: Settings, work: Callable[[AdminContext], Any]) -> Any:
    async def main() -> Any:
        async with admin_context(settings) as ctx:
            return await work(ctx)

    return asyncio.run(main())


def create_tenant(
    settings: Settings, name: str, *, system: bool = False, **limits: Any
) -> TenantPublic:
    spec = TenantCreate(name=name, **limits)
    result: TenantPublic = _run(settings, lambda ctx: create_tenant_async(ctx, spec, system=system))
    return result


def update_tenant(settings: Settings, name: str, **changes: Any) -> TenantPublic:
    update = TenantUpdate(**changes)
    result: TenantPublic = _run(settings, lambda ctx: update_tenant_async(ctx, name, update))
    return result


def create_key(
    settings: Settings, tenant: str, expires_days: int | None = None, name: str = ""
) -> str:
    """Create a key and return its secret (the only time it is available)."""
    _public, secret = _run(
        settings, lambda ctx: create_key_async(ctx, tenant, expires_days=expires_days, name=name)
    )
    return str(secret)


def revoke_key(settings: Settings, key_id: int) -> ApiKeyPublic:
    result: ApiKeyPublic = _run(settings, lambda ctx: revoke_key_async(ctx, key_id))
    return result


def list_tenants(settings: Settings) -> list[TenantPublic]:
    engine = make_engine(settings.database_url)
    try:
        init_db(engine)
        with session_factory(engine)() as session:
            return [store.tenant_public(t) for t in store.list_tenants(session)]
    finally:
        engine.dispose()


def list_keys(settings: Settings, tenant: str | None = None) -> list[ApiKeyPublic]:
    engine = make_engine(settings.database_url)
    try:
        init_db(engine)
        with session_factory(engine)() as session:
            return [store.key_public(k) for k in store.list_keys(session, tenant)]
    finally:
        engine.dispose()
