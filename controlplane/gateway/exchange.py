"""One inference call's state from arrival to its audit record, and the services it uses."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from starlette.types import Send

from controlplane.admission.limits import RejectReason
from controlplane.admission.local import Admission, Slot
from controlplane.core.config import Settings
from controlplane.engines.pool import EnginePool
from controlplane.metering.metrics import Metrics
from controlplane.metering.usage import UsageLedger
from controlplane.tenancy.keycache import KeyPrincipal

log = logging.getLogger(__name__)


# Request ids: a random per-process prefix and a counter. Unique across replicas and restarts
# without a getrandom() system call per request (it releases the GIL on the hot path).
_ID_PREFIX = "req_" + secrets.token_hex(6)
_id_counter = itertools.count(1)


def next_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):010x}"


class Outcome(StrEnum):
    OK = "ok"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    REFUSED = "refused"  # invalid for the gateway (400/404/413): never reached admission
    UPSTREAM_ERROR = "upstream_error"
    ENGINE_ERROR = "engine_error"
    TIMEOUT = "timeout"
    AUDIT_UNAVAILABLE = "audit_unavailable"


@dataclass
class GatewayServices:
    settings: Settings
    admission: Admission
    engines: EnginePool
    usage: UsageLedger
    metrics: Metrics
    audit: Any  # controlplane.audit.AuditWriter
    audit_unavailable: type[Exception]

    @property
    def audit_queued(self) -> bool:
        """Answers wait for no audit commit, only for the writer to accept (and keep) the entry."""
        return self.settings.audit_wait == "queued"


class Exchange:
    def __init__(
        self,
        services: GatewayServices,
        principal: KeyPrincipal,
        endpoint: str,
        body: dict[str, Any],
        raw: bytes,
        client: str | None,
    ) -> None:
        self.services = services
        self.principal = principal
        self.endpoint = endpoint
        self.body = body
        self.raw = raw
        self.client = client
        self.request_id = next_request_id()
        self.model = str(body.get("model", ""))
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.started = time.monotonic()
        self.first_byte_at: float | None = None
        self.headers_sent = False
        self.status = 0
        self.outcome = Outcome.CANCELLED  # until something better is known
        self.reject_reason: RejectReason | None = None
        self.slot: Slot | None = None
        self.usage_reported = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.completion_events = 0
        self.body_changed = False
        self._request_entry: asyncio.Future[int] | None = None
        self._finished = False
        self._completion_recorded = False

    def upstream_body(self) -> bytes:
        if self.stream and not self.client_wants_usage:
            # Usage always comes from the engine: ask for it, the relay strips it again.
            options = dict(self.body.get("stream_options") or {})
            options["include_usage"] = True
            self.body["stream_options"] = options
            self.body_changed = True
        return orjson.dumps(self.body) if self.body_changed else self.raw

    def take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
            self.usage_reported = True

    def mark_first_byte(self) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.monotonic()

    async def send_headers(
        self, send: Send, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        headers.append((b"x-request-id", self.request_id.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        self.headers_sent = True
        if not self.stream:
            self.mark_first_byte()

    def start_audit(self) -> None:
        """Queue the api.request entry: it has its place in the chain before anything this
        exchange records later. Fails (the entry's future holds AuditUnavailable) when the
        audit store cannot be written: no new call then (fail closed).

        A stream's entry commits while admission and the engine work; a plain answer waits for
        the completion entry anyway, so its api.request is not urgent and usually shares that
        one commit. With queued audit the entry is kept through store failures (nobody waits
        for its commit)."""
        audit = self.services.audit
        try:
            audit.check_writable()
            self._request_entry = audit.enqueue(
                "api.request",
                urgent=self.stream,
                keep=self.services.audit_queued,
                tenant=self.principal.tenant.name,
                key_id=self.principal.key_id,
                key_prefix=self.principal.key_prefix,
                endpoint=self.endpoint,
                model=self.model,
                stream=self.stream,
                request_id=self.request_id,
                client=self.client,
            )
        except self.services.audit_unavailable as exc:
            self._request_entry = asyncio.get_running_loop().create_future()
            self._request_entry.set_exception(exc)
        # Whoever awaits it or not, its outcome is consumed (no "never retrieved" warning).
        self._request_entry.add_done_callback(_consume)

    def request_entry_failed(self) -> bool:
        """The api.request entry is known to have failed already (not merely still pending)."""
        entry = self._request_entry
        if entry is None or not entry.done() or entry.cancelled():
            return False
        return entry.exception() is not None

    async def audit_done(self) -> None:
        """Wait until the api.request event is recorded: committed, or with queued audit
        accepted (it commits with the next group commit while the answer is on its way, and is
        kept through store failures). Raises AuditUnavailable if it cannot be."""
        assert self._request_entry is not None, "start_audit() first"
        if self.services.audit_queued and not self.request_entry_failed():
            return
        if not self._request_entry.done():
            self.services.audit.expedite()
        await asyncio.shield(self._request_entry)

    def _estimate_unreported_usage(self) -> bool:
        """A cancelled stream has no usage chunk: estimate from what was relayed."""
        if self.usage_reported or self.slot is None:
            return False
        self.completion_tokens = self.completion_events
        self.prompt_tokens = max(1, len(self.raw) // 4)  # about 4 bytes per token of JSON text
        return True

    async def finish(self) -> bool:
        """Count usage, update metrics and write the completion audit event (never raises);
        returns whether the completion entry is recorded: committed, or with `audit_wait =
        "queued"` accepted in the chain's order (it commits with the next group commit while
        the answer goes out, and is kept through store failures).

        Called once (later calls return the first result): by the relay just before the
        response's last byte (so a client that saw the end has a recorded completion entry),
        else when the exchange ends in any other way.
        """
        if self._finished:
            return self._completion_recorded
        self._finished = True
        services, tenant = self.services, self.principal.tenant
        estimated = self._estimate_unreported_usage()
        elapsed = time.monotonic() - self.started
        tokens = self.prompt_tokens + self.completion_tokens
        if self.slot is not None:
            services.usage.record(tenant.tenant_id, self.prompt_tokens, self.completion_tokens)
            services.admission.charge_tokens(self.slot.tenant, tokens)
            children = services.metrics.tenant(tenant.name)
            children.prompt_tokens.inc(self.prompt_tokens)
            children.completion_tokens.inc(self.completion_tokens)
            children.latency.observe(elapsed)
            if self.first_byte_at is not None and self.stream:
                children.ttft.observe(self.first_byte_at - self.started)
        services.usage.touch_key(self.principal.key_id)
        services.metrics.requests.labels(tenant.name, self.endpoint, self.outcome.value).inc()
        try:
            entry = services.audit.enqueue(
                "api.completion",
                keep=services.audit_queued,
                tenant=tenant.name,
                key_id=self.principal.key_id,
                request_id=self.request_id,
                endpoint=self.endpoint,
                model=self.model,
                status=self.status or None,
                outcome=self.outcome.value,
                reason=self.reject_reason.value if self.reject_reason else None,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                tokens_estimated=estimated,
                latency_ms=round(elapsed * 1000, 3),
                queue_ms=round(self.slot.queue_wait * 1000, 3) if self.slot else None,
                engine=self.slot.engine.url if self.slot else None,
            )
            if services.audit_queued:
                entry.add_done_callback(functools.partial(_completion_written, self.request_id))
            else:
                await entry
        except Exception:
            # The request already ran; the failure is visible as audit unhealthy and in /readyz,
            # and new requests are refused at `api.request` until the store is back.
            log.exception("could not audit completion of %s", self.request_id)
            return False
        self._completion_recorded = True
        return True


def _completion_written(request_id: str, entry: asyncio.Future[int]) -> None:
    """With queued audit nobody awaits the completion entry. It fails only if the writer closed
    while the store was down; that is logged here."""
    if not entry.cancelled() and entry.exception() is not None:
        log.error("could not audit completion of %s: %s", request_id, entry.exception())


def _consume(entry: asyncio.Future[int]) -> None:
    if not entry.cancelled():
        entry.exception()
