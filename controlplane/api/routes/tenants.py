"""Admin API: tenants and their limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status

from controlplane.api.deps import AuditWritable, CurrentAdmin, ReaderDep, admin_context, in_session
from controlplane.api.errors import documented
from controlplane.tenancy import actions, store
from controlplane.tenancy.models import (
    TENANT_NAME_PATTERN,
    DailyUsagePublic,
    TenantCreate,
    TenantPublic,
    TenantUpdate,
)

router = APIRouter(
    prefix="/api/tenants", tags=["tenants"], responses=documented(401, 403, 422, 503)
)

TenantName = Annotated[str, Path(pattern=TENANT_NAME_PATTERN, max_length=63)]
NOT_FOUND = documented(404)


@router.get("", summary="List tenants")
async def list_tenants(request: Request, _reader: ReaderDep) -> list[TenantPublic]:
    rows = await in_session(request, store.list_tenants)
    return [store.tenant_public(row) for row in rows]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a tenant",
    dependencies=[AuditWritable],
    responses=documented(409),
)
async def create_tenant(request: Request, spec: TenantCreate, admin: CurrentAdmin) -> TenantPublic:
    return await actions.create_tenant_async(admin_context(request, admin), spec)


@router.get("/{name}", summary="One tenant", responses=NOT_FOUND)
async def get_tenant(request: Request, name: TenantName, _reader: ReaderDep) -> TenantPublic:
    row = await in_session(request, lambda s: store.get_tenant(s, name))
    return store.tenant_public(row)


@router.patch(
    "/{name}", summary="Change a tenant's limits", dependencies=[AuditWritable], responses=NOT_FOUND
)
async def update_tenant(
    request: Request, name: TenantName, changes: TenantUpdate, admin: CurrentAdmin
) -> TenantPublic:
    return await actions.update_tenant_async(admin_context(request, admin), name, changes)


@router.post(
    "/{name}/disable",
    summary="Disable a tenant (its keys stop working at once)",
    dependencies=[AuditWritable],
    responses=NOT_FOUND,
)
async def disable_tenant(request: Request, name: TenantName, admin: CurrentAdmin) -> TenantPublic:
    ctx = admin_context(request, admin)
    return await actions.update_tenant_async(ctx, name, TenantUpdate(disabled=True))


@router.post(
    "/{name}/enable",
    summary="Enable a disabled tenant",
    dependencies=[AuditWritable],
    responses=NOT_FOUND,
)
async def enable_tenant(request: Request, name: TenantName, admin: CurrentAdmin) -> TenantPublic:
    ctx = admin_context(request, admin)
    return await actions.update_tenant_async(ctx, name, TenantUpdate(disabled=False))


@router.get("/{name}/usage", summary="Tokens per UTC day", responses=NOT_FOUND)
async def tenant_usage(
    request: Request,
    name: TenantName,
    _reader: ReaderDep,
    days: Annotated[int, Query(ge=1, le=366)] = 31,
) -> list[DailyUsagePublic]:
    rows = await in_session(request, lambda s: store.tenant_usage(s, name, days))
    return [DailyUsagePublic.model_validate(row) for row in rows]
