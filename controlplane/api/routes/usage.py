"""Admin API: usage per key, per model or per day over a range of UTC days."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from controlplane.api.deps import ReaderDep, in_session
from controlplane.api.errors import documented
from controlplane.core.db import utcnow
from controlplane.metering.usage_report import GroupBy, usage_groups

router = APIRouter(prefix="/api/usage", tags=["usage"], responses=documented(401, 403, 422))


class UsageGroupPublic(BaseModel):
    tenant: str
    group: str  # the day, the key's label (prefix and name; "(unknown)" before 0007) or model
    key_id: int | None
    estimated: bool  # counts of cancelled streams that never got their usage chunk
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@router.get("", summary="Requests and tokens per key, model or day")
async def usage(
    request: Request,
    _reader: ReaderDep,
    by: GroupBy = GroupBy.KEY,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    start: Annotated[date | None, Query(alias="from", description="first UTC day")] = None,
    end: Annotated[date | None, Query(alias="to", description="last UTC day (today)")] = None,
) -> list[UsageGroupPublic]:
    """Sums over [from, to] (default: the last 31 days), per tenant and key, model or day;
    estimated counts in rows of their own (`estimated: true`). An unknown tenant, or a range
    with no day in it, has no usage: an empty list."""
    last = end or utcnow().date()
    first = start or date.fromordinal(max(1, last.toordinal() - 30))  # (no day before 0001-01-01)
    # A range that holds no day (from after to) simply holds no usage.
    rows = await in_session(request, lambda s: usage_groups(s, by, first, last, tenant))
    return [UsageGroupPublic(**row.as_json()) for row in rows]
