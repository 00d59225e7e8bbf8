"""The console's one router: every page module's routes under /console."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from controlplane.console.pages import (
    admins,
    audit,
    content,
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
PAGES = (signin, oidc, password, dashboard, tenants, tenant_detail, content, usage, audit, admins,
         system)  # fmt: skip
for page in PAGES:
    router.include_router(page.router)
