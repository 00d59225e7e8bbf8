"""Read-only queries behind the console pages (usage tables, audit entries)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import LargeBinary, func, literal, or_, select
from sqlalchemy.orm import Session

from controlplane.audit.models import AuditEntry
from controlplane.console.charts import DayTokens
from controlplane.core.db import utcnow
from controlplane.tenancy.models import DailyUsage, Tenant

# Where the top-models table looks: the most recent completions of the tenant.
TOP_MODELS_SCAN_LIMIT = 20_000


@dataclass(frozen=True)
class UsageRow:
    day: date
    tenant: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    system: bool = False  # the appliance's own tenant: shown, not counted in totals

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ModelUsage:
    model: str
    requests: int
    tokens: int


def usage_rows(db: Session, start: date, end: date, tenant: str | None = None) -> list[UsageRow]:
    """Requests and tokens per tenant per UTC day, newest day first."""
    query = (
        select(
            DailyUsage.day,
            Tenant.name,
            Tenant.system,
            func.sum(DailyUsage.requests),
            func.sum(DailyUsage.prompt_tokens),
            func.sum(DailyUsage.completion_tokens),
        )
        .join(Tenant, Tenant.id == DailyUsage.tenant_id)
        .where(DailyUsage.day >= start, DailyUsage.day <= end)
        .group_by(DailyUsage.day, Tenant.name, Tenant.system)  # over keys and models
        .order_by(DailyUsage.day.desc(), Tenant.name)
    )
    if tenant:
        query = query.where(Tenant.name == tenant)
    return [
        UsageRow(day, name, int(requests), int(prompt), int(completion), system)
        for day, name, system, requests, prompt, completion in db.execute(query)
    ]


def completion_tokens_last_day(db: Session, now: datetime) -> dict[str, tuple[float, bool]]:
    """Each tenant's completion tokens of the last 24 hours and whether it is a system tenant.

    From the daily ledger (cheap at any volume): today's tokens plus yesterday's in proportion
    to the part of yesterday inside the window, so it is an estimate at hourly grain, exact at
    midnight UTC.
    """
    today = now.date()
    yesterday = today - timedelta(days=1)
    elapsed = now - datetime.combine(today, datetime.min.time(), tzinfo=now.tzinfo)
    share_of_yesterday = 1 - elapsed / timedelta(days=1)
    tokens: dict[str, tuple[float, bool]] = {}
    for row in usage_rows(db, yesterday, today):
        weight = 1.0 if row.day == today else share_of_yesterday
        before, _ = tokens.get(row.tenant, (0.0, row.system))
        tokens[row.tenant] = (before + row.completion_tokens * weight, row.system)
    return tokens


def daily_tokens(db: Session, tenant: str, days: int) -> list[DayTokens]:
    today = utcnow().date()
    rows = usage_rows(db, today - timedelta(days=days - 1), today, tenant)
    return [DayTokens(r.day, r.prompt_tokens, r.completion_tokens, r.requests) for r in rows]


def entry_data(entry: AuditEntry) -> dict[str, Any]:
    """The entry's fields, or {} when retention redacted them."""
    if entry.data is None:
        return {}
    loaded = orjson.loads(entry.data)
    return loaded if isinstance(loaded, dict) else {"value": loaded}


def top_models(db: Session, tenant: str, days: int = 30, limit: int = 5) -> list[ModelUsage]:
    """Models by tokens over the last `days`, from the tenant's completion audit entries."""
    since = utcnow() - timedelta(days=days)
    query = (
        select(AuditEntry)
        .where(AuditEntry.tenant == tenant, AuditEntry.kind == "api.completion")
        .where(AuditEntry.time >= since)
        .order_by(AuditEntry.seq.desc())
        .limit(TOP_MODELS_SCAN_LIMIT)
    )
    requests: dict[str, int] = defaultdict(int)
    tokens: dict[str, int] = defaultdict(int)
    for entry in db.scalars(query):
        data = entry_data(entry)
        model = str(data.get("model") or "unknown")
        requests[model] += 1
        tokens[model] += int(data.get("prompt_tokens") or 0) + int(
            data.get("completion_tokens") or 0
        )
    ranked = sorted(requests, key=lambda m: (-tokens[m], -requests[m], m))
    return [ModelUsage(model, requests[model], tokens[model]) for model in ranked[:limit]]


@dataclass(frozen=True)
class AuditFilter:
    start: datetime | None = None
    end: datetime | None = None
    tenant: str = ""
    actor: str = ""
    action: str = ""


@dataclass(frozen=True)
class AuditRow:
    seq: int
    time: datetime
    kind: str
    tenant: str | None
    fields: dict[str, Any]


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def audit_page(
    db: Session, where: AuditFilter, before: int | None, after: int | None, size: int
) -> list[AuditRow]:
    """One page of entries, newest first; `before`/`after` are seq cursors (keyset paging)."""
    query = select(AuditEntry)
    if where.start is not None:
        query = query.where(AuditEntry.time >= where.start)
    if where.end is not None:
        query = query.where(AuditEntry.time <= where.end)
    if where.tenant:
        query = query.where(AuditEntry.tenant == where.tenant)
    if where.action:
        stem = where.action.rstrip(".")
        query = query.where(
            or_(AuditEntry.kind == stem, AuditEntry.kind.like(f"{_like_literal(stem)}.%", "\\"))
        )
    if where.actor:
        # Fields are canonical JSON (sorted keys, no spaces), so the pair appears verbatim;
        # a byte search (no LIKE wildcards) works on SQLite blobs and PostgreSQL bytea alike.
        needle = b'"actor":' + orjson.dumps(where.actor)
        if db.get_bind().dialect.name == "postgresql":
            found = func.position(literal(needle, LargeBinary).op("IN")(AuditEntry.data))
        else:
            found = func.instr(AuditEntry.data, literal(needle, LargeBinary))
        query = query.where(found > 0)
    if after is not None:
        query = query.where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(size)
        rows = list(reversed(list(db.scalars(query))))
    else:
        if before is not None:
            query = query.where(AuditEntry.seq < before)
        rows = list(db.scalars(query.order_by(AuditEntry.seq.desc()).limit(size)))
    return [AuditRow(e.seq, e.time, e.kind, e.tenant, entry_data(e)) for e in rows]
