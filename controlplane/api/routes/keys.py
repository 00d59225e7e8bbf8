"""Admin API: tenant API keys (the secret is returned once, by create)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status

from controlplane.api.deps import AuditWritable, CurrentAdmin, ReaderDep, admin_context, in_session
from controlplane.api.errors import documented
from controlplane.tenancy import actions, store
from controlplane.tenancy.models import TENANT_NAME_PATTERN, ApiKeyCreated, ApiKeyPublic, KeyCreate

router = APIRouter(prefix="/api/keys", tags=["keys"], responses=documented(401, 403, 422, 503))

KeyId = Annotated[int, Path(ge=1, le=2**31 - 1)]
NOT_FOUND = documented(404)


@router.get("", summary="List keys (never their secrets)", responses=NOT_FOUND)
async def list_keys(
    request: Request,
    _reader: ReaderDep,
    tenant: Annotated[str | None, Query(pattern=TENANT_NAME_PATTERN, max_length=63)] = None,
) -> list[ApiKeyPublic]:
    return await in_session(
        request, lambda s: [store.key_public(k) for k in store.list_keys(s, tenant)]
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a key",
    dependencies=[AuditWritable],
    responses=documented(400, 404, 409),
)
async def create_key(request: Request, spec: KeyCreate, admin: CurrentAdmin) -> ApiKeyCreated:
    days = store.key_expiry_days(spec.expires_days)  # 400 invalid_expiry, as the CLI says it
    public, secret = await actions.create_key_async(
        admin_context(request, admin), spec.tenant, expires_days=days, name=spec.name
    )
    return ApiKeyCreated(**public.model_dump(), key=secret)


@router.get("/{key_id}", summary="One key", responses=NOT_FOUND)
async def get_key(request: Request, key_id: KeyId, _reader: ReaderDep) -> ApiKeyPublic:
    return await in_session(request, lambda s: store.key_public(store.get_key(s, key_id)))


@router.post(
    "/{key_id}/revoke",
    summary="Revoke a key (effective on the next request)",
    dependencies=[AuditWritable],
    responses=NOT_FOUND,
)
async def revoke_key(request: Request, key_id: KeyId, admin: CurrentAdmin) -> ApiKeyPublic:
    return await actions.revoke_key_async(admin_context(request, admin), key_id)
