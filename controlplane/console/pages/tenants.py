"""Tenants: list, create, edit limits, disable/enable (through controlplane.tenancy.actions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from controlplane.api.deps import audit_writer
from controlplane.audit.content import MASTER_KEY_FILE, ContentVault
from controlplane.console.deps import AdminAction, AdminViewer, Viewer
from controlplane.console.forms import (
    CHECKBOXES,
    TEXT_FIELDS,
    FormError,
    form_values,
    tenant_create_from_form,
    tenant_update_from_form,
)
from controlplane.console.notices import notice_text
from controlplane.console.sessions import ActiveSession
from controlplane.console.web import (
    admin_context,
    bad_request,
    ensure_audit_writable,
    record_change,
    redirect,
    render,
    run_db,
)
from controlplane.tenancy import actions, store
from controlplane.tenancy.limits import TenantLimits
from controlplane.tenancy.models import TenantPublic, TenantUpdate

router = APIRouter()


def _public_tenants(db: Session) -> list[TenantPublic]:
    return [store.tenant_public(tenant) for tenant in store.list_tenants(db)]


def live_load(request: Request) -> dict[int, tuple[int, int]]:
    """In flight and queued per tenant id, from this replica's admission state."""
    gateway = getattr(request.app.state, "gateway", None)
    tenants = gateway.admission.tenants if gateway is not None else {}
    return {tid: (state.in_flight, len(state.queue)) for tid, state in tenants.items()}


@router.get("/tenants")
async def tenant_list(request: Request, active: Viewer, notice: str = "") -> Response:
    tenants = await run_db(request, _public_tenants)
    return render(
        request, "tenants.html", active, section="tenants", title="Tenants", tenants=tenants,
        load=live_load(request), notice=notice_text(notice),
    )  # fmt: skip


def _tenant_form(request: Request, active: Any, values: dict[str, str], *, editing: str = "",
                 error: str | None = None, status_code: int = 200) -> Response:  # fmt: skip
    return render(
        request, "tenant_form.html", active, status_code=status_code, section="tenants",
        title=f"Edit {editing}" if editing else "New tenant", values=values, editing=editing,
        fields=TEXT_FIELDS, checkboxes=CHECKBOXES, error=error,
    )  # fmt: skip


@router.get("/tenants/new")
async def tenant_new(request: Request, active: AdminViewer) -> Response:
    return _tenant_form(request, active, form_values(TenantLimits.model_validate({})))


@router.post("/tenants")
async def tenant_create(request: Request, active: AdminAction) -> Response:
    form = await request.form()
    try:
        spec = tenant_create_from_form(form)
    except FormError as exc:
        return _tenant_form(request, active, form_values(form), error=str(exc), status_code=400)
    ensure_audit_writable(request)
    try:
        tenant = await actions.create_tenant_async(admin_context(request, active), spec)
    except store.ServiceError as exc:
        return _tenant_form(
            request, active, form_values(form), error=exc.message, status_code=exc.status
        )
    return redirect(f"/tenants/{tenant.name}", notice="tenant_created")


@router.get("/tenants/{name}/edit")
async def tenant_edit(request: Request, name: str, active: AdminViewer) -> Response:
    tenant = await run_db(request, lambda db: store.tenant_public(store.get_tenant(db, name)))
    return _tenant_form(request, active, form_values(tenant), editing=tenant.name)


async def _apply_update(request: Request, active: ActiveSession, name: str,
                        changes: TenantUpdate) -> None:  # fmt: skip
    ensure_audit_writable(request)
    await actions.update_tenant_async(admin_context(request, active), name, changes)


@router.post("/tenants/{name}/edit")
async def tenant_update(request: Request, name: str, active: AdminAction) -> Response:
    form = await request.form()
    try:
        changes = tenant_update_from_form(form)
    except FormError as exc:
        values = form_values(form) | {"name": name}
        return _tenant_form(request, active, values, editing=name, error=str(exc), status_code=400)
    await _apply_update(request, active, name, changes)
    return redirect(f"/tenants/{name}", notice="tenant_updated")


@router.post("/tenants/{name}/disable")
async def tenant_disable(request: Request, name: str, active: AdminAction) -> Response:
    await _apply_update(request, active, name, TenantUpdate.model_validate({"disabled": True}))
    return redirect(f"/tenants/{name}", notice="tenant_disabled")


@router.post("/tenants/{name}/enable")
async def tenant_enable(request: Request, name: str, active: AdminAction) -> Response:
    await _apply_update(request, active, name, TenantUpdate.model_validate({"disabled": False}))
    return redirect(f"/tenants/{name}", notice="tenant_enabled")


def content_vault(request: Request) -> ContentVault:
    """The appliance's content vault (the control plane's, or one on the same master key)."""
    state = request.app.state
    vault: ContentVault | None = getattr(state, "content_vault", None)
    if vault is None:
        vault = ContentVault(state.db_engine, Path(state.settings.data_dir) / MASTER_KEY_FILE)
        state.content_vault = vault
    return vault


@router.post("/tenants/{name}/erase")
async def tenant_erase(request: Request, name: str, active: AdminAction) -> Response:
    """Revoke every key, disable, destroy the content key; typed confirmation required."""
    form = await request.form()
    if str(form.get("confirm_name", "")).strip() != name:
        raise bad_request("confirm_name: type the tenant's name exactly to erase it",
                          "confirm_name")  # fmt: skip
    if await run_db(request, lambda db: store.get_tenant(db, name).system):
        raise bad_request(f"{name} is the appliance's system tenant: it cannot be erased",
                          "confirm_name")  # fmt: skip
    ensure_audit_writable(request)
    ctx = admin_context(request, active)
    keys = await run_db(request, lambda db: [k.id for k in store.list_keys(db, name)
                                             if k.revoked_at is None])  # fmt: skip
    for key_id in keys:
        await actions.revoke_key_async(ctx, key_id)
    await actions.update_tenant_async(ctx, name, TenantUpdate.model_validate({"disabled": True}))
    shred_seq = await content_vault(request).shred(name, audit_writer(request),
                                                   actor=active.username)  # fmt: skip
    await record_change(request, "admin.tenant_erase", active, tenant=name, target=name,
                        keys_revoked=len(keys), content_shred_seq=shred_seq)  # fmt: skip
    return redirect(f"/tenants/{name}", notice="tenant_erased")
