"""System page: release and bundle, release history, engine profile and KV plan, TLS, preflight."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import controlplane
from controlplane.appliance.system_info import appliance_root, read_system_info
from controlplane.console.deps import Viewer
from controlplane.console.web import render
from controlplane.core.db import utcnow

router = APIRouter()


@router.get("/system")
async def system(request: Request, active: Viewer) -> Response:
    settings = request.app.state.settings
    info = await run_in_threadpool(read_system_info, appliance_root(settings))
    return render(
        request, "system.html", active, section="system", title="System", info=info,
        version=controlplane.__version__, now=utcnow(), engines=settings.engine_urls,
        database=settings.database_url.split(":")[0], capacity=settings.engine_capacity,
    )  # fmt: skip
