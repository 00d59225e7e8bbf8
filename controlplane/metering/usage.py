"""Token usage: counted in memory on the request path, written to `usage_daily` in batches.

Each count is per tenant, key, model and UTC day, with the estimated counts (a cancelled stream
that never got its usage chunk) apart from the reported ones.

Quotas read `tokens_today`/`tokens_this_month`: the database totals (all replicas, refreshed on
every flush) plus what this replica counted since. Between two flushes another replica's usage is
not yet seen, so a quota can be overshot by at most one flush interval of traffic.
Keys' `last_used_at` is batched the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from datetime import date, datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from controlplane.core.db import utcnow
from controlplane.tenancy.models import ApiKey, DailyUsage

log = logging.getLogger(__name__)

# (tenant, day, key, model, estimated) -> [requests, prompt, completion]
Counts = dict[tuple[int, date, int, str, bool], list[int]]
MODEL_NAME_MAX = 200  # the column's width; an engine's model name is shorter


class UsageLedger:
    def __init__(self, engine: Engine, flush_interval: float = 1.0) -> None:
        self._engine = engine
        self._interval = flush_interval
        self._pending: Counts = defaultdict(lambda: [0, 0, 0])
        self._flushing: Counts = {}
        self._last_used: dict[int, datetime] = {}
        self._today: dict[int, int] = {}
        self._month: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.flush()
        self._task = asyncio.create_task(self._loop(), name="usage-flush")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    def record(
        self,
        tenant_id: int,
        prompt_tokens: int,
        completion_tokens: int,
        key_id: int = 0,
        model: str = "",
        estimated: bool = False,
    ) -> None:
        day = utcnow().date()
        counts = self._pending[(tenant_id, day, key_id, model[:MODEL_NAME_MAX], estimated)]
        counts[0] += 1
        counts[1] += prompt_tokens
        counts[2] += completion_tokens

    def touch_key(self, key_id: int) -> None:
        self._last_used[key_id] = utcnow()

    def tokens_today(self, tenant_id: int) -> int:
        today = utcnow().date()
        return self._today.get(tenant_id, 0) + self._unflushed(tenant_id, lambda d: d == today)

    def tokens_this_month(self, tenant_id: int) -> int:
        today = utcnow().date()
        same_month = lambda d: (d.year, d.month) == (today.year, today.month)  # noqa: E731
        return self._month.get(tenant_id, 0) + self._unflushed(tenant_id, same_month)

    def _unflushed(self, tenant_id: int, day_matches: object) -> int:
        total = 0
        for counts in (self._pending, self._flushing):
            for (tid, day, *_), (_, prompt, completion) in counts.items():
                if tid == tenant_id and day_matches(day):  # type: ignore[operator]
                    total += prompt + completion
        return total

    async def flush(self) -> None:
        """Write what was counted, then reload today's and this month's totals."""
        self._flushing = dict(self._pending)
        self._pending = defaultdict(lambda: [0, 0, 0])
        last_used, self._last_used = self._last_used, {}
        try:
            today, month = await asyncio.to_thread(self._write_and_read, self._flushing, last_used)
        except Exception:
            # Keep the counts for the next try; the database may be briefly locked or down.
            log.exception("usage flush failed; will retry")
            for key, counts in self._flushing.items():
                merged = self._pending[key]
                for index in range(3):
                    merged[index] += counts[index]
            for key_id, when in last_used.items():
                self._last_used.setdefault(key_id, when)
            self._flushing = {}
            return
        self._today, self._month, self._flushing = today, month, {}

    def _write_and_read(
        self, counts: Counts, last_used: dict[int, datetime]
    ) -> tuple[dict[int, int], dict[int, int]]:
        insert = pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        with self._engine.begin() as conn:
            for key, (requests, prompt, completion) in sorted(counts.items()):
                tenant_id, day, key_id, model, estimated = key
                statement = insert(DailyUsage).values(
                    tenant_id=tenant_id,
                    day=day,
                    key_id=key_id,
                    model=model,
                    estimated=estimated,
                    requests=requests,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                )
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["tenant_id", "day", "key_id", "model", "estimated"],
                        set_={
                            "requests": DailyUsage.requests + requests,
                            "prompt_tokens": DailyUsage.prompt_tokens + prompt,
                            "completion_tokens": DailyUsage.completion_tokens + completion,
                        },
                    )
                )
            for key_id, when in last_used.items():
                conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))
            today = utcnow().date()
            tokens = func.sum(DailyUsage.prompt_tokens + DailyUsage.completion_tokens)
            by_tenant = select(DailyUsage.tenant_id, tokens).group_by(DailyUsage.tenant_id)
            day_rows = conn.execute(by_tenant.where(DailyUsage.day == today)).all()
            month_rows = conn.execute(by_tenant.where(DailyUsage.day >= today.replace(day=1))).all()
        return (
            {int(t): int(n or 0) for t, n in day_rows},
            {int(t): int(n or 0) for t, n in month_rows},
        )

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()
