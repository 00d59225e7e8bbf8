"""Usage per tenant per day, per key and per model (requests and tokens), as tables and CSV."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

from fastapi import APIRouter, Request
from starlette.responses import Response

from controlplane.console.charts import tenant_tokens_chart
from controlplane.console.deps import Viewer
from controlplane.console.queries import UsageRow, usage_rows
from controlplane.console.web import SECURITY_HEADERS, bad_request, render, run_db
from controlplane.core.db import utcnow
from controlplane.metering.usage_report import CSV_COLUMNS, GroupBy, UsageGroup, usage_groups

router = APIRouter()
DEFAULT_DAYS = 30
MAX_DAYS = 3660


def _day(raw: str, param: str, default: date) -> date:
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise bad_request(f"{param}: expected a date like 2026-11-26", param) from None


def _window(request: Request) -> tuple[date, date, str]:
    today = utcnow().date()
    params = request.query_params
    end = _day(params.get("end", ""), "end", today)
    start = _day(params.get("start", ""), "start", end - timedelta(days=DEFAULT_DAYS - 1))
    if start > end:
        raise bad_request("start: must not be after end", "start")
    if (end - start).days >= MAX_DAYS:
        raise bad_request(f"the window may span at most {MAX_DAYS} days", "start")
    return start, end, params.get("tenant", "").strip()


@router.get("/usage")
async def usage(request: Request, active: Viewer) -> Response:
    start, end, tenant = _window(request)
    rows: list[UsageRow] = await run_db(request, usage_rows, start, end, tenant or None)
    by_key = await run_db(request, usage_groups, GroupBy.KEY, start, end, tenant or None)
    by_model = await run_db(request, usage_groups, GroupBy.MODEL, start, end, tenant or None)
    counted = [r for r in rows if not r.system]  # the system tenant is shown, never counted
    totals = {
        "requests": sum(r.requests for r in counted),
        "prompt_tokens": sum(r.prompt_tokens for r in counted),
        "completion_tokens": sum(r.completion_tokens for r in counted),
    }
    return render(
        request, "usage.html", active, section="usage", title="Usage", rows=rows, totals=totals,
        by_key=by_key, by_model=by_model,
        start=start.isoformat(), end=end.isoformat(), tenant=tenant,
        chart=tenant_tokens_chart(
            [(r.tenant, r.day, r.total_tokens) for r in rows], start, end
        ) if rows else None,
    )  # fmt: skip


@router.get("/usage.csv")
async def usage_csv(request: Request, active: Viewer) -> Response:
    start, end, tenant = _window(request)
    by = request.query_params.get("by", "")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if by in (GroupBy.KEY, GroupBy.MODEL):  # per key or per model: one row per group
        groups: list[UsageGroup] = await run_db(
            request, usage_groups, GroupBy(by), start, end, tenant or None
        )
        writer.writerow([by if c == "group" else c for c in CSV_COLUMNS])
        for group in groups:
            values = group.as_json()
            writer.writerow(["" if values[c] is None else values[c] for c in CSV_COLUMNS])
    elif by:
        raise bad_request("by: expected key or model (or nothing: per day)", "by")
    else:
        rows: list[UsageRow] = await run_db(request, usage_rows, start, end, tenant or None)
        writer.writerow(["day", "tenant", "requests", "prompt_tokens", "completion_tokens",
                         "total_tokens"])  # fmt: skip
        for row in rows:
            writer.writerow([row.day.isoformat(), row.tenant, row.requests, row.prompt_tokens,
                             row.completion_tokens, row.total_tokens])  # fmt: skip
    name = f"sparkplane-usage-{by + '-' if by else ''}{start.isoformat()}-{end.isoformat()}"
    name += f"-{tenant}.csv" if tenant else ".csv"
    return Response(
        buffer.getvalue(), media_type="text/csv; charset=utf-8",
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
    )  # fmt: skip
