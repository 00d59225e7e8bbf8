"""Audit trail: filters, keyset pagination, entry detail, verify now, export with a reason."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from controlplane.api.deps import audit_writer
from controlplane.audit.export import export_audit
from controlplane.audit.models import AuditCheckpoint, AuditEntry
from controlplane.audit.verify import verify_live
from controlplane.console.deps import Action, Viewer
from controlplane.console.queries import AuditFilter, audit_page, entry_data
from controlplane.console.sessions import ActiveSession
from controlplane.console.web import bad_request, ensure_audit_writable, record, render, run_db

router = APIRouter()
PAGE_SIZE = 50
KIND_HINTS = ("api.request", "api.completion", "admin", "console", "audit", "installer")


def parse_time(raw: str, param: str) -> datetime | None:
    """An ISO date or date-time (the browser's datetime-local); naive means UTC."""
    if not raw.strip():
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise bad_request(f"{param}: expected a date like 2026-11-26 or 2026-11-26T14:30",
                          param) from None  # fmt: skip
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_filter(params: Any) -> AuditFilter:
    return AuditFilter(
        start=parse_time(str(params.get("start", "")), "start"),
        end=parse_time(str(params.get("end", "")), "end"),
        tenant=str(params.get("tenant", "")).strip(),
        actor=str(params.get("actor", "")).strip(),
        action=str(params.get("action", "")).strip(),
    )  # fmt: skip


def _cursor(raw: str | None, param: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise bad_request(f"{param}: expected a sequence number", param)
    return int(raw)


def _filter_query(request: Request) -> dict[str, str]:
    keys = ("start", "end", "tenant", "actor", "action")
    return {key: request.query_params[key] for key in keys if request.query_params.get(key)}


async def _page(request: Request, active: ActiveSession, **extra: Any) -> Response:
    where = read_filter(request.query_params)
    before = _cursor(request.query_params.get("before"), "before")
    after = _cursor(request.query_params.get("after"), "after")
    rows = await run_db(request, audit_page, where, before, after, PAGE_SIZE)
    return render(
        request, "audit.html", active, section="audit", title="Audit trail", rows=rows,
        filters=_filter_query(request), page_size=PAGE_SIZE, kind_hints=KIND_HINTS,
        paged=before is not None or after is not None, **extra,
    )  # fmt: skip


@router.get("/audit")
async def audit_list(request: Request, active: Viewer) -> Response:
    return await _page(request, active)


def _entry(db: Session, seq: int) -> tuple[AuditEntry, AuditCheckpoint | None] | None:
    entry = db.get(AuditEntry, seq)
    if entry is None:
        return None
    checkpoint = (
        db.query(AuditCheckpoint).filter(AuditCheckpoint.size >= seq)
        .order_by(AuditCheckpoint.size).first()
    )  # fmt: skip
    return entry, checkpoint


@router.get("/audit/{seq}")
async def audit_entry(request: Request, seq: int, active: Viewer) -> Response:
    found = await run_db(request, _entry, seq)
    if found is None:
        raise bad_request(f"audit entry {seq} does not exist (or was pruned)", "seq")
    entry, checkpoint = found
    return render(
        request, "audit_entry.html", active, section="audit", title=f"Audit entry {seq}",
        entry=entry, fields=entry_data(entry), checkpoint=checkpoint,
        envelope=orjson.dumps(orjson.loads(entry.envelope), option=orjson.OPT_INDENT_2).decode(),
        data=orjson.dumps(entry_data(entry), option=orjson.OPT_INDENT_2).decode(),
    )  # fmt: skip


def public_keys(request: Request) -> list[Path]:
    return sorted(Path(request.app.state.settings.data_dir).glob("audit-signing*.pub"))


@router.post("/audit/verify")
async def audit_verify(request: Request, active: Action) -> Response:
    engine = request.app.state.db_engine
    report = await run_in_threadpool(verify_live, engine, public_keys(request))
    ensure_audit_writable(request)
    await record(request, "audit.verify", active, valid=report.valid, entries=report.entries,
                 problems=report.problems_total)  # fmt: skip
    return await _page(request, active, report=report)


@router.post("/audit/export")
async def audit_export(request: Request, active: Action) -> Response:
    form = await request.form()
    reason = str(form.get("reason", "")).strip()
    if len(reason) < 5:
        raise bad_request("reason: say why the records are exported (at least 5 characters)",
                          "reason")  # fmt: skip
    where = read_filter(form)
    ensure_audit_writable(request)
    # Exports hold personal data: written 0600 into a private temp dir, deleted once sent.
    folder = Path(tempfile.mkdtemp(prefix="sparkplane-export-"))
    name = f"sparkplane-audit-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.jsonl"
    try:
        result = await export_audit(
            request.app.state.db_engine, audit_writer(request), folder / name, reason=reason,
            start=where.start, end=where.end, tenant=where.tenant or None, actor=active.username,
        )  # fmt: skip
    except ValueError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise bad_request(str(exc)) from None
    return FileResponse(
        result.path, media_type="application/x-ndjson", filename=name,
        headers={"Cache-Control": "no-store", "X-Audit-Export-Seq": str(result.export_seq)},
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )  # fmt: skip
