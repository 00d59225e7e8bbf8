"""One inference call as a state machine, from its checked request to the last byte.

`RelayCall` owns everything one call has: its audit entries, its admission slot, the engine's
response, what it cost and how it ended. Nothing outside sets its state; each change is one of
its transitions:

    ADMITTING --admitted--> FORWARDING --engine answered--> RELAYING
        |                       |                               |
        +--------- refused, rejected, failed, cancelled --------+--> RECORDED (once)

`api.request` is queued when the call starts and commits while admission and the engine work;
the client gets no byte before it is recorded, and 503 if it cannot be (fail closed). The
`api.completion` entry is recorded once, when the outcome is final: before a plain answer's
first byte and before a stream's last one, so a client that saw the end has a recorded
completion entry (with `audit_wait = "queued"`, "recorded" means accepted in the chain's order).

The call runs in the request's task, next to a task that waits for the client's
`http.disconnect`. If the client goes away at any moment (queued, waiting for the first token,
mid-stream) the work is cancelled: its `finally` blocks free the admission slot and close the
upstream connection (which makes vLLM abort the generation) before anything else runs; the
call is then recorded as cancelled, with usage estimated from what was relayed. Any other
exception is a fault of the gateway: the call is recorded as `server_error` with status 500
(if nothing was sent yet, the entry point answers 500 in the one error shape).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from starlette.types import Receive, Send

from controlplane.admission.limits import ONE, Demand, Rejected, RejectReason
from controlplane.admission.local import Admission, Slot
from controlplane.api.errors import (
    ApiError,
    api_error,
    audit_unavailable_error,
    internal_error,
    send_error,
    sse_error_event,
)
from controlplane.audit.captured import ContentStore
from controlplane.audit.errors import AuditUnavailable
from controlplane.audit.writer import AuditWriter
from controlplane.core.config import Settings
from controlplane.core.errors import DomainError
from controlplane.engines.client import (
    EngineConnectError,
    EngineDisconnected,
    EngineHTTPError,
    EngineResponse,
)
from controlplane.engines.pool import EnginePool
from controlplane.gateway.call_audit import CallAudit
from controlplane.gateway.capture import CallCapture
from controlplane.gateway.errors import (
    ClientLeft,
    EngineBrokeOff,
    EngineRefused,
    EngineTimeout,
    EngineUnavailable,
)
from controlplane.gateway.sse import StreamRelay
from controlplane.metering.metrics import Metrics
from controlplane.metering.usage import UsageLedger
from controlplane.tenancy.keycache import KeyPrincipal

log = logging.getLogger(__name__)

# Request ids: a random per-process prefix and a counter. Unique across replicas and restarts
# without a getrandom() system call per request (it releases the GIL on the hot path).
_ID_PREFIX = "req_" + secrets.token_hex(6)
_id_counter = itertools.count(1)

SSE_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


def next_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):010x}"


@dataclass
class GatewayServices:
    """What every call uses; built once by the application's lifespan."""

    settings: Settings
    admission: Admission
    engines: EnginePool
    usage: UsageLedger
    metrics: Metrics
    audit: AuditWriter
    capture: ContentStore | None = None  # content capture (audit/captured.py), opted in per tenant
    # Answers wait for no audit commit, only for the writer to accept (and keep) the entry.
    audit_queued: bool = field(init=False)

    def __post_init__(self) -> None:
        self.audit_queued = self.settings.audit_wait == "queued"


class Phase(StrEnum):
    ADMITTING = "admitting"  # api.request queued; waiting for a slot (or refused before one)
    FORWARDING = "forwarding"  # holds a slot; the engine is asked
    RELAYING = "relaying"  # the engine answered; its body is read or streamed to the client
    RECORDED = "recorded"  # counted and its api.completion entry written: the outcome is final


class Outcome(StrEnum):
    OK = "ok"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    REFUSED = "refused"  # invalid for the gateway (400/404/413): never reached admission
    UPSTREAM_ERROR = "upstream_error"
    ENGINE_ERROR = "engine_error"
    TIMEOUT = "timeout"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    SERVER_ERROR = "server_error"  # an unexpected exception in the gateway itself


class RelayCall:
    def __init__(
        self,
        services: GatewayServices,
        principal: KeyPrincipal,
        endpoint: str,
        client: str | None,
        raw: bytes,
        body: dict[str, Any],
        *,
        body_changed: bool = False,
        demand: Demand = ONE,
        refusal: DomainError | None = None,
    ) -> None:
        self.services = services
        self.principal = principal
        self.endpoint = endpoint
        self._client = client
        self._raw = raw
        self._body = body
        self._body_changed = body_changed
        self._demand = demand  # the sequences and worst-case tokens admission counts
        self._refusal = refusal  # the gateway's reason not to forward this request, if any
        self.request_id = next_request_id()
        self.model = str(body.get("model", ""))
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self._client_wants_usage = (
            isinstance(options, dict) and options.get("include_usage") is True
        )
        self.started = time.monotonic()
        self._phase = Phase.ADMITTING
        self._outcome = Outcome.CANCELLED  # until something better is known
        self._status = 0  # the HTTP status of the answer, once decided
        self._reject_reason: RejectReason | None = None
        self._slot: Slot | None = None
        self._first_byte_at: float | None = None
        self._headers_sent = False
        self._usage_reported = False
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._completion_events = 0
        self._audit = CallAudit(services.audit, services.audit_queued)
        self._completion_recorded = False
        self._working = False
        self._client_gone = False
        # Content capture: only for a tenant that opted in (nothing is kept for the others).
        self._capture: CallCapture | None = None
        self._closing: asyncio.Future[bool] | None = None  # sealing, then the completion entry
        if principal.tenant.capture_content and services.capture is not None:
            self._capture = CallCapture(services.capture, endpoint, self.model, raw)

    # ---- the whole call ------------------------------------------------------------------

    async def run(self, receive: Receive, send: Send) -> None:
        """Serve the call on this ASGI channel; returns when it is recorded (never raises for
        the client's disconnect, which cancels the work)."""
        # The work runs in this task; a watcher task cancels it when the client goes away.
        # (Cheaper than a second task for the work and asyncio.wait over both.)
        task = asyncio.current_task()
        assert task is not None
        self._working = True
        watcher = asyncio.create_task(self._cancel_on_disconnect(receive, task))
        try:
            await self._serve(send)
        except asyncio.CancelledError:
            if not self._client_gone:
                raise  # the server itself is cancelling us (shutdown)
            task.uncancel()
        except Exception:
            # A fault of ours, not the client's: recorded as one before the 500 goes out (the
            # ingress sends it), or before the error event that ends a stream under way.
            self._outcome = Outcome.SERVER_ERROR
            if not self._headers_sent:
                self._status = 500
            else:
                with contextlib.suppress(Exception):  # the client may be gone as well
                    await self._end_stream(send, internal_error())
            raise
        finally:
            self._working = False
            watcher.cancel()
            await self._record()

    async def _cancel_on_disconnect(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if self._working:
            self._client_gone = True
            self._outcome = Outcome.CANCELLED
            task.cancel()

    async def _serve(self, send: Send) -> None:
        principal = self.principal
        self._audit.open(
            urgent=self.stream,
            tenant=principal.tenant.name,
            key_id=principal.key_id,
            key_prefix=principal.key_prefix,
            endpoint=self.endpoint,
            model=self.model,
            stream=self.stream,
            request_id=self.request_id,
            client=self._client,
        )
        if self._audit.request_failed():
            await self._request_recorded(send)  # answers 503
            return
        if self._refusal is not None:
            # 4xx: the request itself was wrong; 5xx: the gateway could not check it (engine).
            if isinstance(self._refusal, ClientLeft):
                self._outcome, self._status = Outcome.CANCELLED, self._refusal.status
                return
            failed = self._refusal.status >= 500
            await self._refuse(
                send, self._refusal, Outcome.ENGINE_ERROR if failed else Outcome.REFUSED
            )
            return
        try:
            slot = await self.services.admission.acquire(
                self.principal.tenant, self.model, self._demand
            )
        except Rejected as rejected:
            self._reject_reason = rejected.reason
            await self._refuse(send, rejected, Outcome.REJECTED)
            return
        self._admitted(slot)
        try:
            await self._forward(send, slot)
        finally:
            slot.release()

    # ---- transitions --------------------------------------------------------------------

    def _admitted(self, slot: Slot) -> None:
        assert self._phase is Phase.ADMITTING
        self._phase, self._slot = Phase.FORWARDING, slot

    def _engine_answered(self, status: int) -> None:
        assert self._phase is Phase.FORWARDING
        self._phase, self._status = Phase.RELAYING, status

    async def _refuse(self, send: Send, reason: DomainError, outcome: Outcome) -> None:
        """End with an error answer in the one error shape, once api.request is recorded."""
        self._outcome, self._status = outcome, reason.status
        if await self._request_recorded(send):
            await send_error(send, api_error(reason))

    async def _send_headers(
        self, send: Send, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        headers.append((b"x-request-id", self.request_id.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        self._headers_sent = True

    # ---- the engine ----------------------------------------------------------------------

    async def _forward(self, send: Send, slot: Slot) -> None:
        services, engine = self.services, slot.engine
        remaining = max(0.1, services.settings.request_timeout - (time.monotonic() - self.started))
        headers = {
            "Content-Type": "application/json",
            "X-Request-Id": self.request_id,
            "X-Sparkplane-Tenant": self.principal.tenant.name,
        }
        body = self._upstream_body(slot.priority)
        while True:
            try:
                response = await engine.client.request(
                    "POST", engine.api_path(self.endpoint), body, headers, time_limit=remaining
                )
                break
            except EngineConnectError as exc:
                # Nothing reached the engine: safe to try another healthy one, once per engine.
                services.engines.mark_failed(engine, str(exc))
                if services.admission.switch_engine(slot, self.model):
                    engine = slot.engine
                    continue
                await self._refuse(send, _unreachable(), Outcome.ENGINE_ERROR)
                return
            except EngineDisconnected as exc:
                services.engines.mark_failed(engine, f"request failed: {exc}")
                await self._refuse(send, _unreachable(), Outcome.ENGINE_ERROR)
                return
            except TimeoutError:
                timeout = EngineTimeout("the engine did not answer in time")
                await self._refuse(send, timeout, Outcome.TIMEOUT)
                return
        # `close()` drops an unfinished upstream connection: on cancellation that aborts the
        # generation.
        try:
            self._engine_answered(response.status)
            is_stream = response.content_type == "text/event-stream"
            if self.stream and response.status == 200 and is_stream:
                await self._relay_stream(response, send)
            else:
                await self._relay_whole(response, send)
        except TimeoutError:
            self._outcome = Outcome.TIMEOUT
            await self._fail(send, EngineTimeout("the engine did not finish in time"))
        except EngineHTTPError as exc:
            self._outcome = Outcome.ENGINE_ERROR
            services.engines.mark_failed(engine, f"response broken: {exc}")
            await self._fail(send, EngineBrokeOff("the engine's answer broke off"))
        finally:
            response.close()

    async def _fail(self, send: Send, error: DomainError) -> None:
        """Answer the engine's failure: with its status before the headers went out, else (a
        stream under way) as the stream's last event, once the call's failure is recorded."""
        if not self._headers_sent:
            await self._refuse(send, error, self._outcome)
        else:
            await self._end_stream(send, api_error(error))

    async def _end_stream(self, send: Send, error: ApiError) -> None:
        """End a stream under way with the error as its last event, once the call is recorded."""
        await self._record()
        event = sse_error_event(error)
        await send({"type": "http.response.body", "body": event, "more_body": False})

    def _upstream_body(self, priority: int | None) -> bytes:
        if self.stream and not self._client_wants_usage:
            # Usage always comes from the engine: ask for it, the relay strips it again.
            options = dict(self._body.get("stream_options") or {})
            options["include_usage"] = True
            self._body["stream_options"] = options
            self._body_changed = True
        if "priority" in self._body:  # the order of the engine's queue is ours, not a client's
            del self._body["priority"]
            self._body_changed = True
        raw = orjson.dumps(self._body) if self._body_changed else self._raw
        if priority is None:
            return raw
        # Added before the object's closing brace (a non-empty object: it has a model), so the
        # body is not serialized again for it.
        return b'%s,"priority":%d}' % (raw.rstrip()[:-1], priority)

    async def _relay_whole(self, response: EngineResponse, send: Send) -> None:
        body = await response.read()
        if self._audit.request_failed() and not await self._request_recorded(send):
            return
        content_type = response.headers.get("content-type", "application/json").encode()
        if response.status == 200:
            self._outcome = Outcome.OK
            if self._capture is not None:
                self._capture.answer(body)
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                self._take_usage(orjson.loads(body).get("usage"))
        else:
            # The engine's error body, in the one error shape (vLLM's type and integer code
            # are not OpenAI's).
            self._outcome = Outcome.UPSTREAM_ERROR
            body = api_error(EngineRefused.from_engine(response.status, body)).body()
            content_type = b"application/json"
        # One answer, so one wait: the completion entry is queued behind api.request (usually
        # into the same group commit) and is recorded before the client gets a byte. A client
        # leaving now cannot stop the write: the entry is queued before the first await. If it
        # could not be written, a committed api.request is the record of the call; with
        # neither, the answer is a 503.
        if not await self._record() and not await self._request_recorded(send):
            return
        # With its length the answer goes out as one plain body (as the engine sent it), not
        # chunked.
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        await self._send_headers(send, response.status, headers)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _relay_stream(self, response: EngineResponse, send: Send) -> None:
        if not await self._request_recorded(send):
            return
        relay = StreamRelay(strip_usage=not self._client_wants_usage)
        capture = self._capture
        await self._send_headers(send, 200, list(SSE_HEADERS))
        try:
            async for data in response.iter_chunks():
                out = relay.feed(data)
                if out:
                    if capture is not None:
                        capture.feed(out)
                    if self._first_byte_at is None:
                        self._first_byte_at = time.monotonic()
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            tail = relay.finish()
            if capture is not None and tail:
                capture.feed(tail)
            self._outcome = Outcome.OK
            self._settle_stream(relay)
            # Hold back the end of the stream ([DONE]) until the completion entry is recorded.
            await self._record()
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            self._settle_stream(relay)

    def _settle_stream(self, relay: StreamRelay) -> None:
        self._completion_events = relay.content_events
        if relay.usage is not None:
            self._take_usage(relay.usage)

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self._completion_tokens = int(usage.get("completion_tokens") or 0)
            self._usage_reported = True

    # ---- the audit -----------------------------------------------------------------------

    async def _request_recorded(self, send: Send) -> bool:
        """Wait until api.request is recorded; if it cannot be, answer 503 (fail closed) and
        return False."""
        try:
            await self._audit.request_recorded()
        except AuditUnavailable:
            self._outcome, self._status = Outcome.AUDIT_UNAVAILABLE, 503
            await send_error(send, audit_unavailable_error())
            return False
        return True

    async def _record(self) -> bool:
        """Count usage, update metrics and write the api.completion entry (never raises, but
        for the client's cancellation while captured content is sealed: the entry is written
        all the same); returns whether the entry is recorded. Runs once (later calls return
        the first result): just before the answer's last byte, else when the call ends in any
        other way.
        """
        if self._phase is Phase.RECORDED:
            return self._completion_recorded
        self._phase = Phase.RECORDED
        services, tenant, slot = self.services, self.principal.tenant, self._slot
        estimated = self._estimate_unreported_usage()
        elapsed = time.monotonic() - self.started
        # Time to the first relayed event of a stream (a plain answer arrives whole: its time
        # is the latency).
        ttft = None if self._first_byte_at is None else self._first_byte_at - self.started
        if slot is not None:
            services.usage.record(
                tenant.tenant_id, self._prompt_tokens, self._completion_tokens,
                self.principal.key_id, self.model, estimated,
            )  # fmt: skip
            services.admission.charge_tokens(
                slot.tenant, self._prompt_tokens + self._completion_tokens
            )
            children = services.metrics.tenant(tenant.name)
            children.prompt_tokens.inc(self._prompt_tokens)
            children.completion_tokens.inc(self._completion_tokens)
            children.latency.observe(elapsed)
            if ttft is not None:
                children.ttft.observe(ttft)
        services.usage.touch_key(self.principal.key_id)
        services.metrics.requests.labels(tenant.name, self.endpoint, self._outcome.value).inc()
        fields = dict(
            tenant=tenant.name,
            key_id=self.principal.key_id,
            endpoint=self.endpoint,
            model=self.model,
            status=self._status or None,
            outcome=self._outcome.value,
            reason=self._reject_reason.value if self._reject_reason else None,
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._completion_tokens,
            tokens_estimated=estimated,
            latency_ms=round(elapsed * 1000, 3),
            ttft_ms=None if ttft is None else round(ttft * 1000, 3),
            queue_ms=round(slot.queue_wait * 1000, 3) if slot else None,
            engine=slot.engine.url if slot else None,
        )
        if self._capture is None:
            self._completion_recorded = await self._audit.close(self.request_id, **fields)
        else:
            # Sealing waits for a thread. Shielded: a client that leaves meanwhile cancels this
            # call, not the entry, which is written once the content is sealed.
            self._closing = asyncio.ensure_future(self._close_with_content(fields))
            self._completion_recorded = await asyncio.shield(self._closing)
        return self._completion_recorded

    async def _close_with_content(self, fields: dict[str, Any]) -> bool:
        return await self._audit.close(self.request_id, **fields, **await self._seal_content())

    async def _seal_content(self) -> dict[str, str | None]:
        """Seal what a call that reached the engine sent and got; its `content_sha256`."""
        assert self._capture is not None
        if self._slot is None:
            return {}  # refused before the engine: nothing was generated
        try:
            finished = self._outcome is Outcome.OK
            tenant = self.principal.tenant.name
            return {"content_sha256": await self._capture.seal(tenant, self.request_id, finished)}
        except Exception:
            # The call happened; its entry says that its content could not be kept.
            log.exception("could not capture the content of %s", self.request_id)
            return {"content_sha256": None}

    def _estimate_unreported_usage(self) -> bool:
        """A cancelled stream has no usage chunk: estimate from what was relayed."""
        if self._usage_reported or self._slot is None:
            return False
        self._completion_tokens = self._completion_events
        self._prompt_tokens = max(1, len(self._raw) // 4)  # about 4 bytes per token of JSON text
        return True


def _unreachable() -> EngineUnavailable:
    return EngineUnavailable("the engine cannot be reached; try again")
