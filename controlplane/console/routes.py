"""The console's one router: every page module's routes under /console."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from controlplane.console.pages import admins, audit, dashboard, signin, tenant_detail, tenants
from controlplane.console.web import redirect

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("")
async def console_root() -> Response:
    return redirect("/")


for page in (signin, dashboard, tenants, tenant_detail, audit, admins):
    router.include_router(page.router)
