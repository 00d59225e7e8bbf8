"""The engine pool: one keep-alive client per engine, health checks, least-in-flight choice.

An engine is taken out when its health check fails or a request cannot reach it, and put back
when `/health` and `/v1/models` answer again. In-flight counts here are the admission layer's:
it calls `take`/`give_back` so that no engine ever has more than `capacity` requests from us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from controlplane.engines.client import EngineClient, EngineHTTPError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Engine:
    url: str  # the OpenAI base URL, e.g. http://127.0.0.1:8000/v1
    capacity: int
    client: EngineClient
    healthy: bool = False
    in_flight: int = 0
    models: list[dict[str, Any]] = field(default_factory=list)
    last_error: str = "not checked yet"
    checked_at: float = 0.0

    def api_path(self, endpoint: str) -> str:
        """The request path of an OpenAI endpoint, e.g. /v1/chat/completions."""
        return f"{self.client.base_path}/{endpoint}"

    @property
    def root_path(self) -> str:
        # vLLM serves /health and /tokenize (its own tokenizer and chat template) at the root,
        # next to /v1.
        return self.client.base_path.removesuffix("/v1")

    @property
    def model_ids(self) -> set[str]:
        return {str(model.get("id")) for model in self.models}

    def serves(self, model: str | None) -> bool:
        return model is None or not self.models or model in self.model_ids


class EnginePool:
    def __init__(
        self,
        urls: list[str],
        capacity: int,
        *,
        connect_timeout: float = 5.0,
        health_interval: float = 2.0,
        keepalive: float = 4.0,
    ) -> None:
        self._keepalive = keepalive
        self._urls = urls
        self._capacity = capacity
        self._connect_timeout = connect_timeout
        self._health_interval = health_interval
        self.engines: list[Engine] = []
        # False when replicas share the engines: capacity is then enforced by the database
        # (admission/coordinated.py); a replica's own count would only starve its other tenants.
        self.enforce_capacity = True
        self._listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        for url in self._urls:
            # Idle connections are dropped before the engine drops them (vLLM: after 5 s), so a
            # reused connection is rarely one the engine is closing at that very moment.
            client = EngineClient(
                url, connect_timeout=self._connect_timeout, keepalive=self._keepalive
            )
            self.engines.append(Engine(url=url, capacity=self._capacity, client=client))
        await self.check_all()
        self._task = asyncio.create_task(self._health_loop(), name="engine-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for engine in self.engines:
            await engine.client.close()

    def on_capacity_change(self, listener: Callable[[], None]) -> None:
        """Called whenever an engine comes back: the admission layer dispatches its queues."""
        self._listeners.append(listener)

    # ---- choice --------------------------------------------------------------------------

    def take(self, model: str | None, held_back: int = 0) -> Engine | None:
        """The healthy engine serving `model` with the fewest requests in flight, or None;
        `held_back` of each engine's capacity (its queue, admission.local) is not used."""
        best: Engine | None = None
        for engine in self.engines:
            room = not self.enforce_capacity or engine.in_flight < engine.capacity - held_back
            eligible = engine.healthy and room and engine.serves(model)
            if eligible and (best is None or engine.in_flight < best.in_flight):
                best = engine
        if best is not None:
            best.in_flight += 1
        return best

    def give_back(self, engine: Engine) -> None:
        engine.in_flight -= 1

    def any_healthy(self) -> bool:
        return any(engine.healthy for engine in self.engines)

    def knows_model(self, model: str) -> bool:
        healthy = [engine for engine in self.engines if engine.healthy]
        return any(engine.serves(model) for engine in healthy)

    def model_objects(self) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for engine in self.engines:
            if engine.healthy:
                for model in engine.models:
                    seen.setdefault(str(model.get("id")), model)
        return list(seen.values())

    def total_capacity(self) -> int:
        return sum(engine.capacity for engine in self.engines if engine.healthy)

    # ---- health --------------------------------------------------------------------------

    def mark_failed(self, engine: Engine, reason: str) -> None:
        if engine.healthy:
            log.warning("engine %s taken out: %s", engine.url, reason)
        engine.healthy = False
        engine.last_error = reason
        self._wake.set()

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(engine) for engine in self.engines))

    async def _check(self, engine: Engine) -> None:
        limit = max(self._connect_timeout, 1.0)
        was_healthy = engine.healthy
        try:
            for path in (engine.root_path + "/health", engine.api_path("models")):
                response = await engine.client.request("GET", path, time_limit=limit)
                try:
                    answer = await response.read()
                finally:
                    response.close()
                if response.status != 200:
                    raise RuntimeError(f"{path} answered {response.status}")
            payload = orjson.loads(answer)
            engine.models = [m for m in payload.get("data", []) if isinstance(m, dict)]
        except (EngineHTTPError, TimeoutError, RuntimeError, ValueError, AttributeError) as exc:
            engine.healthy = False
            engine.last_error = str(exc) or type(exc).__name__
            if was_healthy:
                log.warning("engine %s unhealthy: %s", engine.url, engine.last_error)
        else:
            engine.healthy = True
            engine.last_error = ""
            if not was_healthy:
                log.info("engine %s healthy, models %s", engine.url, sorted(engine.model_ids))
                for listener in self._listeners:
                    listener()
        engine.checked_at = time.time()

    async def _health_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._health_interval)
            self._wake.clear()
            for engine in self.engines:
                engine.client.close_expired()
            await self.check_all()
