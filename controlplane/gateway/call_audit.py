"""The two audit entries of one call, and what an answer waits for (`SPARKPLANE_AUDIT_WAIT`).

`api.request` is queued when the call starts; `api.completion` when its outcome is final.
With `durable` audit an answer waits for the commit of the entries before it; with `queued`
only for the writer to accept them in the chain's order (they commit with the next group
commit while the answer is on its way, and are kept through store failures). `RelayCall`
decides when; this says how.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from controlplane.audit.errors import AuditUnavailable
from controlplane.audit.writer import AuditWriter

log = logging.getLogger(__name__)


class CallAudit:
    def __init__(self, writer: AuditWriter, queued: bool) -> None:
        self.writer = writer
        self.queued = queued
        self._request_entry: asyncio.Future[int] | None = None

    def open(self, urgent: bool, **fields: Any) -> None:
        """Queue the api.request entry: it has its place in the chain before anything the call
        records later. Fails (the entry's future holds AuditUnavailable) when the audit store
        cannot be written: no new call then (fail closed).

        `urgent` for a stream, whose entry commits while admission and the engine work; a
        plain answer waits for the completion entry anyway, so its api.request usually shares
        that one commit."""
        try:
            self.writer.check_writable()
            entry = self.writer.enqueue("api.request", urgent=urgent, keep=self.queued, **fields)
        except AuditUnavailable as exc:
            entry = asyncio.get_running_loop().create_future()
            entry.set_exception(exc)
        # Whoever awaits it or not, its outcome is consumed (no "never retrieved" warning).
        entry.add_done_callback(_consume)
        self._request_entry = entry

    def request_failed(self) -> bool:
        """The api.request entry is known to have failed already (not merely still pending)."""
        entry = self._request_entry
        if entry is None or not entry.done() or entry.cancelled():
            return False
        return entry.exception() is not None

    async def request_recorded(self) -> None:
        """Return once api.request is recorded (committed, or with queued audit accepted);
        AuditUnavailable if it cannot be."""
        entry = self._request_entry
        assert entry is not None, "open() first"
        if self.queued and not self.request_failed():
            return
        if not entry.done():
            self.writer.expedite()
        await asyncio.shield(entry)

    async def close(self, request_id: str, **fields: Any) -> bool:
        """Write the api.completion entry (never raises); returns whether it is recorded."""
        try:
            entry = self.writer.enqueue(
                "api.completion", keep=self.queued, request_id=request_id, **fields
            )
            if self.queued:
                entry.add_done_callback(functools.partial(_completion_written, request_id))
            else:
                await entry
        except Exception:
            # The call already ran; the failure is visible as audit unhealthy and in /readyz,
            # and new calls are refused at `api.request` until the store is back.
            log.exception("could not audit completion of %s", request_id)
            return False
        return True


def _completion_written(request_id: str, entry: asyncio.Future[int]) -> None:
    """With queued audit nobody awaits the completion entry. It fails only if the writer closed
    while the store was down; that is logged here."""
    if not entry.cancelled() and entry.exception() is not None:
        log.error("could not audit completion of %s: %s", request_id, entry.exception())


def _consume(entry: asyncio.Future[int]) -> None:
    if not entry.cancelled():
        entry.exception()
