"""The simulator's HTTP server (aiohttp): vLLM's OpenAI routes plus /sim/* control routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

from .control import control_routes, error_response, json_response, read_json
from .engine import SimEngine, Track
from .model import SimOptions
from .parse import (
    build_plan,
    check_model,
    embedding_inputs,
    priority_of,
    stream_flags,
    tenant_of,
)
from .shapes import DONE, BadRequest, Plan, embedding_item, embedding_vector, error_body, usage
from .tokenize_route import tokenize_routes


class Dropped(Exception):
    """Raised after the drop fault cut the connection on purpose."""


class SimServer:
    def __init__(self, opts: SimOptions) -> None:
        self.opts = opts
        self.engine = SimEngine(opts)
        self.port = opts.port
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.add_routes(
            [
                web.get("/health", self.health),
                web.get("/metrics", self.metrics),
                web.get("/v1/models", self.models),
                web.post("/v1/chat/completions", self.chat),
                web.post("/v1/completions", self.completions),
                web.post("/v1/embeddings", self.embeddings),
                *tokenize_routes(self.engine),
                *control_routes(self.engine, self.refuse_for),
            ]
        )
        # handler_cancellation: a client that goes away cancels its handler, as in vLLM.
        self._runner = web.AppRunner(
            self.app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=0.25,
            keepalive_timeout=opts.keepalive_s,
        )
        self._site: web.TCPSite | None = None
        self._relisten: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> int:
        await self._runner.setup()
        await self._listen()
        if self.opts.startup_delay_s:
            await self.refuse_for(self.opts.startup_delay_s)
        return self.port

    async def _listen(self) -> None:
        self._site = web.TCPSite(
            self._runner, self.opts.host, self.port, reuse_address=True, backlog=2048
        )
        await self._site.start()
        self.port = self._runner.addresses[-1][1]

    async def refuse_for(self, seconds: float) -> None:
        """Close the listening socket (connections are refused), reopen it after `seconds`."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

        async def reopen() -> None:
            await asyncio.sleep(seconds)
            await self._listen()

        if self._relisten is not None:
            self._relisten.cancel()
        self._relisten = asyncio.create_task(reopen())

    async def stop(self) -> None:
        if self._relisten is not None:
            self._relisten.cancel()
        await self._runner.cleanup()

    # ---- vLLM routes -----------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.engine.faults.unhealthy else 200)

    async def metrics(self, request: web.Request) -> web.Response:
        m = self.engine.metrics
        return web.Response(body=m.render(), headers={"Content-Type": m.content_type})

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {
                "id": name,
                "object": "model",
                "created": int(time.time()),
                "owned_by": "vllm",
                "root": name,
                "parent": None,
                "max_model_len": self.opts.max_model_len,
            }
            for name in self.opts.models
        ]
        return json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def embeddings(self, request: web.Request) -> web.Response:
        try:
            if not self.opts.embeddings:
                raise BadRequest("The model does not support Embeddings API", status=404)
            body = await read_json(request)
            model = check_model(body, self.opts)
            texts = embedding_inputs(body)
            priority = priority_of(body)
            encoding = body.get("encoding_format", "float")
            if encoding not in ("float", "base64"):
                raise BadRequest("encoding_format must be float or base64", param="encoding_format")
        except BadRequest as exc:
            self.engine.counters.rejected += 1
            return error_response(exc)
        tokens = sum(max(len(t) // 4, 1) for t in texts)
        tenant = tenant_of(body, request.headers.get(self.opts.tenant_header))
        async with self.engine.admitted(tenant, priority):
            await asyncio.sleep(self.engine.latency.prefill_seconds(tokens))
        data = [
            embedding_item(i, embedding_vector(t, self.opts.embedding_dim), encoding)
            for i, t in enumerate(texts)
        ]
        return json_response(
            {
                "id": "embd-" + model,
                "object": "list",
                "created": int(time.time()),
                "model": model,
                "data": data,
                "usage": usage(tokens, 0),
            }
        )

    # ---- generation ------------------------------------------------------------------------

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        engine = self.engine
        try:
            body = await read_json(request)
            plan = build_plan(body, self.opts, chat)
            stream, include_usage = stream_flags(body)
            priority = priority_of(body)
        except BadRequest as exc:
            engine.counters.rejected += 1
            return error_response(exc)
        faults = engine.faults
        if faults.delay_s:
            await asyncio.sleep(faults.delay_s)
        if faults.take_error():
            engine.counters.errors_injected += 1
            return web.Response(
                body=error_body("simulated engine failure", faults.error_status),
                status=faults.error_status,
                content_type="application/json",
            )
        stop_at = faults.drop_after_tokens if faults.take_drop() else None
        tenant = tenant_of(body, request.headers.get(self.opts.tenant_header))
        try:
            async with engine.admitted(tenant, priority) as track:
                engine.counters.prompt_tokens += plan.prompt_tokens
                engine.metrics.prompt_tokens.inc(plan.prompt_tokens)
                engine.metrics.prompt_hist.observe(plan.prompt_tokens)
                await asyncio.sleep(engine.latency.prefill_seconds(plan.prompt_tokens))
                if stream:
                    return await self._stream(request, plan, track, include_usage, stop_at)
                # Nobody sees the tokens of a plain answer: wake up at most every 20 ms.
                async for _ in self._paced(plan, track, stop_at, quantum=0.02):
                    pass
                if stop_at is not None:
                    self._cut(request, track)
                self._finished(plan, track)
                return json_response(plan.full_response(track.generated))
        except Dropped:
            return web.Response(status=500)  # never sent: the transport is closed

    async def _stream(
        self,
        request: web.Request,
        plan: Plan,
        track: Track,
        include_usage: bool,
        stop_at: int | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        last = len(plan.pieces) - 1
        async for index in self._paced(plan, track, stop_at):
            await response.write(plan.chunk(index, index == last))
        if stop_at is not None:
            self._cut(request, track)
        if include_usage:
            await response.write(plan.usage_chunk(track.generated))
        await response.write(DONE)
        await response.write_eof()
        self._finished(plan, track)
        return response

    async def _paced(
        self, plan: Plan, track: Track, stop_at: int | None, quantum: float = 0.001
    ) -> AsyncIterator[int]:
        """Yield token indexes at the decode rate of the current batch size.

        Tokens due less than `quantum` ahead go out at once (fewer, longer sleeps cost less
        CPU); the end is never early: the last wait makes up the whole duration.
        """
        loop = asyncio.get_running_loop()
        due = loop.time()
        count = len(plan.pieces) if stop_at is None else min(stop_at, len(plan.pieces))
        for index in range(count):
            if index:
                due += self.engine.token_interval()
            delay = due - loop.time()
            if delay > quantum or (index == count - 1 and delay > 0):
                await asyncio.sleep(delay)
            elif index % 16 == 15:
                await asyncio.sleep(0)
            track.generated = index + 1
            if index == 0:
                track.first_token = time.monotonic()
                self.engine.metrics.ttft.observe(track.first_token - track.arrived)
            yield index

    def _cut(self, request: web.Request, track: Track) -> None:
        self.engine.counters.dropped += 1
        track.dropped = True
        if request.transport is not None:
            request.transport.abort()
        raise Dropped

    def _finished(self, plan: Plan, track: Track) -> None:
        metrics = self.engine.metrics
        now = time.monotonic()
        metrics.e2e.observe(now - track.arrived)
        if track.first_token is not None and track.generated > 1:
            metrics.inter_token.observe((now - track.first_token) / (track.generated - 1))
        metrics.success.labels(finished_reason=plan.finish_reason).inc()
