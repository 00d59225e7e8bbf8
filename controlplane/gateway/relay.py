"""The OpenAI relay: one ASGI response that admits, forwards, streams and always cleans up.

`RelayResponse` runs the whole life of an inference call (audit, admission, upstream call,
relay) in the request's task, next to a task that waits for the client's `http.disconnect`. If
the client goes away at any moment (queued, waiting for the first token, mid-stream) the work is
cancelled: its `finally` blocks free the admission slot and close the upstream connection
(which makes vLLM abort the request) before anything else runs. The outcome is then counted and
audited once the cancellation is caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from controlplane.admission.limits import Rejected
from controlplane.api.errors import ApiError, audit_unavailable_error, error_response
from controlplane.engines.client import (
    EngineConnectError,
    EngineDisconnected,
    EngineHTTPError,
    EngineResponse,
)
from controlplane.gateway.exchange import Exchange, Outcome
from controlplane.gateway.sse import StreamRelay


class RelayResponse(Response):
    """A Starlette response whose status and headers come from the engine, decided late."""

    def __init__(self, exchange: Exchange, refusal: ApiError | None = None) -> None:
        super().__init__()
        self.x = exchange
        self.refusal = refusal  # the gateway's own answer to a request it will not forward
        self._working = False  # _run has not returned: a disconnect cancels it
        self._client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The work runs in this task; a watcher task cancels it when the client goes away.
        # (Cheaper than a second task for the work and asyncio.wait over both.)
        task = asyncio.current_task()
        assert task is not None
        self._working = True
        watcher = asyncio.create_task(self._cancel_on_disconnect(receive, task))
        try:
            await self._run(send)
        except asyncio.CancelledError:
            if not self._client_gone:
                raise  # the server itself is cancelling us (shutdown)
            task.uncancel()
        finally:
            self._working = False
            watcher.cancel()
            await self.x.finish()

    async def _cancel_on_disconnect(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if self._working:
            self._client_gone = True
            self.x.outcome = Outcome.CANCELLED
            task.cancel()

    async def _run(self, send: Send) -> None:
        x = self.x
        # The api.request event commits while admission and the engine work; the client gets no
        # byte before it is recorded (see Exchange.audit_done), and 503 if it cannot be.
        x.start_audit()
        if x.request_entry_failed():
            await self._audited(send)
            return
        if self.refusal is not None:
            # 4xx: the request itself was wrong; 5xx: the gateway could not check it (engine).
            x.outcome = Outcome.ENGINE_ERROR if self.refusal.status >= 500 else Outcome.REFUSED
            await self._reply_error(send, self.refusal)
            return
        try:
            x.slot = await x.services.admission.acquire(x.principal.tenant, x.model)
        except Rejected as rejected:
            x.outcome, x.status = Outcome.REJECTED, rejected.status
            x.reject_reason = rejected.reason
            headers = {"Retry-After": rejected.retry_after_header}
            error = ApiError(
                rejected.status, rejected.message, code=rejected.reason.value, headers=headers
            )
            await self._reply_error(send, error)
            return
        try:
            await self._forward(send)
        finally:
            x.slot.release()

    async def _audited(self, send: Send) -> bool:
        """Wait for the api.request event (`Exchange.audit_done`); if it failed, answer 503
        and return False."""
        try:
            await self.x.audit_done()
        except self.x.services.audit_unavailable:
            self.x.outcome, self.x.status = Outcome.AUDIT_UNAVAILABLE, 503
            await _send_error(send, audit_unavailable_error())
            return False
        return True

    async def _reply_error(self, send: Send, error: ApiError) -> None:
        if await self._audited(send):
            self.x.status = error.status
            await _send_error(send, error)

    async def _engine_unreachable(self, send: Send) -> None:
        self.x.outcome = Outcome.ENGINE_ERROR
        message = "the engine cannot be reached; try again"
        await self._reply_error(send, ApiError(503, message, code="engine_unavailable"))

    async def _forward(self, send: Send) -> None:
        x = self.x
        assert x.slot is not None
        engine = x.slot.engine
        remaining = max(0.1, x.services.settings.request_timeout - (time.monotonic() - x.started))
        headers = {
            "Content-Type": "application/json",
            "X-Request-Id": x.request_id,
            "X-Sparkplane-Tenant": x.principal.tenant.name,
        }
        while True:
            try:
                response = await engine.client.request(
                    "POST",
                    engine.api_path(x.endpoint),
                    x.upstream_body(),
                    headers,
                    time_limit=remaining,
                )
                break
            except EngineConnectError as exc:
                # Nothing reached the engine: safe to try another healthy one, once per engine.
                x.services.engines.mark_failed(engine, str(exc))
                if x.services.admission.switch_engine(x.slot, x.model):
                    engine = x.slot.engine
                    continue
                await self._engine_unreachable(send)
                return
            except EngineDisconnected as exc:
                x.services.engines.mark_failed(engine, f"request failed: {exc}")
                await self._engine_unreachable(send)
                return
            except TimeoutError:
                x.outcome = Outcome.TIMEOUT
                message = "the engine did not answer in time"
                await self._reply_error(send, ApiError(504, message, code="request_timeout"))
                return
        # `close()` drops an unfinished upstream connection: on cancellation that aborts the
        # generation.
        try:
            x.status = response.status
            is_stream = response.content_type == "text/event-stream"
            if x.stream and response.status == 200 and is_stream:
                await self._relay_stream(response, send)
            else:
                await self._relay_whole(response, send)
        except TimeoutError:
            x.outcome = Outcome.TIMEOUT
            if not x.headers_sent:
                message = "the engine did not finish in time"
                await self._reply_error(send, ApiError(504, message, code="request_timeout"))
        except EngineHTTPError as exc:
            x.outcome = Outcome.ENGINE_ERROR
            x.services.engines.mark_failed(engine, f"response broken: {exc}")
            if not x.headers_sent:
                error = ApiError(502, "the engine's answer broke off", "api_error", "engine_error")
                await self._reply_error(send, error)
        finally:
            response.close()

    async def _relay_whole(self, response: EngineResponse, send: Send) -> None:
        x = self.x
        body = await response.read()
        if x.request_entry_failed() and not await self._audited(send):
            return
        if response.status == 200:
            x.outcome = Outcome.OK
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                x.take_usage(orjson.loads(body).get("usage"))
        else:
            x.outcome = Outcome.UPSTREAM_ERROR
        # One answer, so one wait: the completion entry is queued behind api.request (usually
        # into the same group commit) and is committed before the client gets a byte (with
        # queued audit: accepted, in the chain's order). A client leaving now cannot stop the
        # write: the entry is queued before the first await. If it could not be written, a
        # committed api.request is the record of the call; with neither, the answer is a 503.
        if not await x.finish() and not await self._audited(send):
            return
        # With its length the answer goes out as one plain body (as the engine sent it), not
        # chunked.
        headers = [
            (b"content-type", response.headers.get("content-type", "application/json").encode()),
            (b"content-length", b"%d" % len(body)),
        ]
        await x.send_headers(send, response.status, headers)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _relay_stream(self, response: EngineResponse, send: Send) -> None:
        x = self.x
        if not await self._audited(send):
            return
        relay = StreamRelay(strip_usage=not x.client_wants_usage)
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        await x.send_headers(send, 200, headers)
        try:
            async for data in response.iter_chunks():
                out = relay.feed(data)
                if out:
                    x.mark_first_byte()
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            tail = relay.finish()
            x.outcome = Outcome.OK
            _settle_stream(x, relay)
            # Hold back the end of the stream ([DONE]) until the completion entry is recorded.
            await x.finish()
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            _settle_stream(x, relay)


def _settle_stream(x: Exchange, relay: StreamRelay) -> None:
    x.completion_events = relay.content_events
    if relay.usage is not None:
        x.take_usage(relay.usage)


async def _send_error(send: Send, error: ApiError) -> None:
    response = error_response(error)  # the one error shape, with its length and headers
    start = {"type": "http.response.start", "status": response.status_code}
    await send({**start, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
