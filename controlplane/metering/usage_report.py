"""Usage as read back: per tenant per day, or per key or per model over a range of UTC days.

One query module for the admin API (`GET /api/usage`), the console's usage page and its CSV,
and `sparkplane usage`. Estimated counts (cancelled streams without a usage chunk, see
`usage.py`) are never merged with reported ones: each row says whether it is estimated.
Usage counted before keys were recorded (revision 0007) has key 0, shown as "(unknown)".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.tenancy.models import UNKNOWN_KEY, ApiKey, DailyUsage, Tenant

UNKNOWN_KEY_LABEL = "(unknown)"
UNKNOWN_MODEL_LABEL = "(unknown)"


class GroupBy(StrEnum):
    DAY = "day"
    KEY = "key"
    MODEL = "model"


@dataclass(frozen=True)
class UsageGroup:
    """One row: a tenant's usage of one key, model or day in the range."""

    tenant: str
    group: str  # the day (ISO), the key's label (prefix and name) or the model
    key_id: int | None  # with --by key (0: unknown)
    estimated: bool
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"total_tokens": self.total_tokens}


CSV_COLUMNS = ("tenant", "group", "key_id", "estimated", "requests", "prompt_tokens",
               "completion_tokens", "total_tokens")  # fmt: skip


def key_label(prefix: str | None, name: str | None) -> str:
    if prefix is None:
        return UNKNOWN_KEY_LABEL
    return f"{prefix}… {name}" if name else f"{prefix}…"


def usage_groups(
    db: Session, by: GroupBy, start: date, end: date, tenant: str | None = None
) -> list[UsageGroup]:
    """Sums per tenant and key, model or day (and estimated or not), over [start, end]."""
    sums = (
        func.sum(DailyUsage.requests),
        func.sum(DailyUsage.prompt_tokens),
        func.sum(DailyUsage.completion_tokens),
    )
    column: Any = {GroupBy.DAY: DailyUsage.day, GroupBy.KEY: DailyUsage.key_id,
                   GroupBy.MODEL: DailyUsage.model}[by]  # fmt: skip
    query = (
        select(Tenant.name, column, DailyUsage.estimated, *sums)
        .join(Tenant, Tenant.id == DailyUsage.tenant_id)
        .where(DailyUsage.day >= start, DailyUsage.day <= end)
        .group_by(Tenant.name, column, DailyUsage.estimated)
    )
    if tenant:
        query = query.where(Tenant.name == tenant)
    rows = db.execute(query).all()
    labels: dict[int, str] = {}
    if by is GroupBy.KEY:
        ids = {int(row[1]) for row in rows} - {UNKNOWN_KEY}
        found = db.execute(select(ApiKey.id, ApiKey.prefix, ApiKey.name).where(ApiKey.id.in_(ids)))
        labels = {int(i): key_label(prefix, name) for i, prefix, name in found}
    groups = []
    for name, value, estimated, requests, prompt, completion in rows:
        if by is GroupBy.KEY:
            group, key_id = labels.get(int(value), UNKNOWN_KEY_LABEL), int(value)
        elif by is GroupBy.MODEL:
            group, key_id = value or UNKNOWN_MODEL_LABEL, None
        else:
            group, key_id = value.isoformat(), None
        groups.append(UsageGroup(name, group, key_id, bool(estimated), int(requests or 0),
                                 int(prompt or 0), int(completion or 0)))  # fmt: skip
    if by is GroupBy.DAY:  # newest day first, like the console's table
        groups.sort(key=lambda g: (_neg_day(g.group), g.tenant, g.estimated))
    else:  # the biggest first
        groups.sort(key=lambda g: (-g.total_tokens, g.tenant, g.group, g.estimated))
    return groups


def _neg_day(day: str) -> int:
    return -date.fromisoformat(day).toordinal()
