"""Tenant detail: limits, live load, keys (create shown once, revoke, rotate), usage chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from controlplane.console.charts import fill_days, token_bar_chart
from controlplane.console.deps import AdminAction, Viewer
from controlplane.console.notices import notice_text
from controlplane.console.pages.tenants import live_load
from controlplane.console.queries import ModelUsage, daily_tokens, top_models
from controlplane.console.sessions import ActiveSession
from controlplane.console.web import (
    admin_context,
    ensure_audit_writable,
    redirect,
    render,
    run_db,
)
from controlplane.core.db import utcnow
from controlplane.tenancy import actions, store
from controlplane.tenancy.models import MAX_KEY_DAYS, ApiKeyPublic, TenantPublic

router = APIRouter()
CHART_DAYS = 30


@dataclass(frozen=True)
class TenantView:
    tenant: TenantPublic
    keys: list[ApiKeyPublic]
    chart_rows: list[Any]
    models: list[ModelUsage]


def _load(db: Session, name: str) -> TenantView:
    tenant = store.tenant_public(store.get_tenant(db, name))
    keys = [store.key_public(key) for key in store.list_keys(db, name)]
    rows = fill_days(daily_tokens(db, name, CHART_DAYS), utcnow().date(), CHART_DAYS)
    return TenantView(tenant, keys, rows, top_models(db, name, CHART_DAYS))


async def _page(request: Request, active: ActiveSession, name: str, *, notice: str | None = None,
                error: str | None = None, new_key: str | None = None,
                status_code: int = 200) -> Response:  # fmt: skip
    view = await run_db(request, _load, name)
    in_flight, queued = live_load(request).get(view.tenant.id, (0, 0))
    return render(
        request, "tenant.html", active, status_code=status_code, section="tenants",
        title=f"Tenant {view.tenant.name}", view=view, tenant=view.tenant, in_flight=in_flight,
        queued=queued, now=utcnow(), new_key=new_key, notice=notice, error=error,
        chart=token_bar_chart(view.chart_rows, f"Tokens per day, last {CHART_DAYS} days"),
    )  # fmt: skip


@router.get("/tenants/{name}")
async def tenant_detail(request: Request, name: str, active: Viewer, notice: str = "") -> Response:
    return await _page(request, active, name, notice=notice_text(notice))


async def _issue(request: Request, active: ActiveSession, tenant: str, key_name: str,
                 expires_days: int | None) -> tuple[ApiKeyPublic, str]:  # fmt: skip
    ensure_audit_writable(request)
    ctx = admin_context(request, active)
    return await actions.create_key_async(ctx, tenant, expires_days=expires_days, name=key_name)


@router.post("/tenants/{name}/keys")
async def key_create(request: Request, name: str, active: AdminAction) -> Response:
    form = await request.form()
    key_name = str(form.get("key_name", "")).strip()[:100]
    try:
        expires_days = store.key_expiry_from_text(str(form.get("expires_days", "")))
    except store.InvalidKeyExpiry as exc:
        return await _page(request, active, name, error=exc.message, status_code=400)
    public, secret = await _issue(request, active, name, key_name, expires_days)
    # Rendered directly, not redirected: the secret must never travel in a URL or be stored.
    notice = f"Key {public.prefix}… created. Copy it now: it is shown only once."
    return await _page(request, active, name, new_key=secret, notice=notice)


def _owned_key(db: Session, tenant: str, key_id: int) -> ApiKeyPublic:
    key = store.key_public(store.get_key(db, key_id))
    if key.tenant != tenant:
        raise store.NotFound(f"key {key_id} does not belong to tenant {tenant!r}", "key_id")
    return key


async def _revoke(request: Request, active: ActiveSession, tenant: str, key_id: int) -> None:
    ensure_audit_writable(request)
    await run_db(request, _owned_key, tenant, key_id)
    await actions.revoke_key_async(admin_context(request, active), key_id)


@router.post("/tenants/{name}/keys/{key_id}/revoke")
async def key_revoke(request: Request, name: str, key_id: int, active: AdminAction) -> Response:
    await _revoke(request, active, name, key_id)
    return redirect(f"/tenants/{name}", notice="key_revoked")


@router.post("/tenants/{name}/keys/{key_id}/rotate")
async def key_rotate(request: Request, name: str, key_id: int, active: AdminAction) -> Response:
    """Issue a replacement with the same name and lifetime, then revoke the old key at once."""
    old = await run_db(request, _owned_key, name, key_id)
    if old.revoked_at is not None:
        return await _page(request, active, name, error="a revoked key cannot be rotated",
                           status_code=409)  # fmt: skip
    lifetime = None
    if old.expires_at is not None:
        # Rounded: a key issued before both times came from one clock is a few ms short.
        days = round((old.expires_at - old.created_at) / timedelta(days=1))
        lifetime = min(max(1, days), MAX_KEY_DAYS)
    new, secret = await _issue(request, active, name, old.name, lifetime)
    await _revoke(request, active, name, key_id)
    return await _page(request, active, name, new_key=secret,
                       notice=f"Key {old.prefix}… revoked and replaced by {new.prefix}…. "
                       "Copy the new key now: it is shown only once.")  # fmt: skip
