"""Refusals in the audit trail without ballooning it: one entry per address and window.

Refused credentials (`api.auth_failed`) and the refusals that tell of probing (`http.refused`:
a failed CSRF check, a role that may not, a method not allowed, and what the HTTP server answers
by itself: a malformed request, a missed header or body deadline, too many connections) are all
audited (issue 17, findings 5 and 8). The first of a kind from an address is recorded at once,
as it was; the ones after it (from that address, for that tenant if the key had one) in the
same window (SPARKPLANE_AUTH_FAILURE_WINDOW) are counted and
recorded as ONE `<kind>_repeated` entry when the window closes: the count, the first and last
time, and what was seen (key prefixes, reasons, statuses, endpoints, tenants). Windows still
open at shutdown are written then: nothing is lost, and 10,000 made-up keys are two entries.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.audit.errors import AuditUnavailable
from controlplane.audit.writer import AuditWriter
from controlplane.core.db import utcnow

log = logging.getLogger(__name__)
MAX_LISTED = 20  # distinct key prefixes, endpoints or tenants kept per summary


@dataclass
class _Window:
    kind: str
    client: str
    tenant: str | None
    first_at: datetime | None = None
    last_at: datetime | None = None
    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    seen: dict[str, set[str]] = field(default_factory=dict)

    def add(self, fields: dict[str, Any], tenant: str | None) -> None:
        now = utcnow()
        self.first_at = self.first_at or now
        self.last_at = now
        self.count += 1
        self.reasons[str(fields.get("reason") or fields.get("code"))] += 1
        self.statuses[str(fields.get("status"))] += 1
        listed = {"key_prefixes": fields.get("key_prefix"), "endpoints": fields.get("endpoint"),
                  "tenants": tenant}  # fmt: skip
        for name, value in listed.items():
            values = self.seen.setdefault(name, set())
            if value and len(values) < MAX_LISTED:
                values.add(str(value))

    def summary(self, window: float) -> dict[str, Any]:
        assert self.first_at is not None and self.last_at is not None
        return {
            "client": self.client,
            "count": self.count,
            "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(),
            "reasons": dict(self.reasons),
            "statuses": dict(self.statuses),
            "window_seconds": window,
            **{name: sorted(values) for name, values in self.seen.items()},
        }


class RefusalLog:
    def __init__(self, audit: AuditWriter, window: float) -> None:
        self.audit = audit
        self.window = window
        self.open: dict[tuple[str, str, str], _Window] = {}
        self.timers: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def record(self, kind: str, client: str | None, tenant: str | None = None,
                     **fields: Any) -> None:  # fmt: skip
        """Audit one refusal: now if it is the first of its kind from `client` in the window,
        else counted into the window's summary."""
        # Per tenant too: a refused key of a real tenant stays in that tenant's trail.
        key = (kind, client or "unknown", tenant or "")
        window = self.open.get(key)
        if window is not None:
            window.add(fields, tenant)
            return
        self.open[key] = _Window(kind, key[1], tenant)
        loop = asyncio.get_running_loop()
        self.timers[key] = loop.call_later(self.window, self._close, key)
        try:
            await self.audit.record(kind, tenant=tenant, client=client, **fields)
        except AuditUnavailable:
            log.warning("could not audit a refusal (%s from %s)", kind, client)

    def record_soon(self, kind: str, client: str | None, **fields: Any) -> None:
        """`record` from synchronous code (the HTTP server's own refusals)."""
        self._spawn(self.record(kind, client, **fields))

    def server_refused(self, address: str, status: int, code: str) -> None:
        """What the HTTP server answered by itself (controlplane/api/http_server.py)."""
        self.record_soon("http.refused", address, status=status, code=code, via="http_server")

    def _close(self, key: tuple[str, str, str]) -> None:
        self.timers.pop(key, None)
        window = self.open.pop(key, None)
        if window is not None and window.count:
            self._spawn(self._write_summary(window))

    async def _write_summary(self, window: _Window) -> None:
        summary = window.summary(self.window)
        try:
            await self.audit.record(f"{window.kind}_repeated", tenant=window.tenant, **summary)
        except AuditUnavailable:
            log.error("could not audit %s", summary | {"kind": window.kind})

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """Write every window still open (shutdown), then wait for the writes."""
        for key in list(self.timers):
            self.timers.pop(key).cancel()
            self._close(key)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
