"""The console's one router: every page module's routes under /console."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from controlplane.console.pages import (
    admins,
    audit,
    dashboard,
    oidc,
    password,
    signin,
    system,
    tenant_detail,
    tenants,
    usage,
)
from controlplane.console.web import PREFIX, error_page, redirect

__all__ = ["PREFIX", "error_page", "router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("")
async def console_root() -> Response:
    return redirect("/")


# Order matters where paths overlap: /tenants/new (tenants) before /tenants/{name} (tenant_detail).
PAGES = (signin, oidc, password, dashboard, tenants, tenant_detail, usage, audit, admins, system)
for page in PAGES:
    router.include_router(page.router)
