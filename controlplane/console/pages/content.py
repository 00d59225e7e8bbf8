"""A tenant's captured content, decrypted for whoever reads the console (admin or auditor).

Every read is an audit entry (`console.content_read`, with the request ids shown) written before
the page is rendered: no entry, no page (503, fail closed). Content of an erased tenant shows as
erased: its key is gone.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from controlplane.audit.captured import CapturedRecord, ContentStore
from controlplane.console.deps import Viewer
from controlplane.console.pages.tenants import content_vault
from controlplane.console.web import ensure_audit_writable, record, render, run_db
from controlplane.tenancy import store

router = APIRouter()
SHOWN = 50  # the newest records of the tenant


@router.get("/tenants/{name}/content")
async def tenant_content(request: Request, name: str, active: Viewer) -> Response:
    await run_db(request, store.get_tenant, name)  # 404 for a tenant that does not exist
    ensure_audit_writable(request)
    reader = ContentStore(request.app.state.db_engine, content_vault(request))
    records: list[CapturedRecord] = await run_in_threadpool(reader.read, name, SHOWN)
    await record(request, "console.content_read", active, tenant=name, target=name,
                 request_ids=[r.request_id for r in records])  # fmt: skip
    return render(
        request, "content.html", active, section="tenants", title=f"Captured content of {name}",
        tenant_name=name, records=records, shown=SHOWN,
    )  # fmt: skip
