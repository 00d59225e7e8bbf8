"""aiohttp load generators: closed loop, open loop (fixed arrival rate) and streaming clients.

Latencies of the open loop are measured from each request's scheduled send time, so a target
that falls behind is charged for the queueing it causes (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    ttfts: list[float] = field(default_factory=list)  # streams: time to the first data chunk
    chunks: int = 0  # streams: content chunks received
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def throughput(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def merge(self, other: Result) -> None:
        self.latencies += other.latencies
        self.ttfts += other.ttfts
        self.chunks += other.chunks
        self.errors.update(other.errors)
        self.elapsed += other.elapsed


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN when there is nothing to rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Target:
    name: str
    base_url: str  # OpenAI base URL, ends in /v1
    headers: dict[str, str] = field(default_factory=dict)
    body_extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"user": tenant}

    def post_args(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": self.base_url + "/chat/completions",
            "data": orjson.dumps({**body, **self.body_extra}),
            "headers": {"Content-Type": "application/json", **self.headers},
        }


async def one_request(
    session: aiohttp.ClientSession,
    target: Target,
    body: dict[str, Any],
    result: Result,
    started: float,
    timeout: float,
) -> None:
    try:
        async with asyncio.timeout(timeout), session.post(**target.post_args(body)) as resp:
            if resp.status != 200:
                await resp.read()
                result.errors[f"http {resp.status}"] += 1
                return
            if not body.get("stream"):
                await resp.read()
            else:
                first = True
                async for line in resp.content:
                    if line.startswith(b"data: {"):
                        result.chunks += 1
                        if first:
                            result.ttfts.append(time.perf_counter() - started)
                            first = False
        result.latencies.append(time.perf_counter() - started)
    except TimeoutError:
        result.errors["timeout"] += 1
    except aiohttp.ClientError as exc:
        errno = getattr(exc, "errno", None)  # e.g. ECONNRESET (104) inside ClientOSError
        result.errors[type(exc).__name__ + (f" errno {errno}" if errno else "")] += 1


async def closed_loop(
    session: aiohttp.ClientSession,
    target: Target,
    body: dict[str, Any],
    concurrency: int,
    duration: float,
    timeout: float = 30.0,
    error_pause: float = 0.05,
) -> Result:
    """`concurrency` clients, each sending its next request as soon as the last one ends."""
    result = Result()
    begin = time.perf_counter()
    stop_at = begin + duration

    async def client() -> None:
        while time.perf_counter() < stop_at:
            failed = result.failed
            await one_request(session, target, body, result, time.perf_counter(), timeout)
            if result.failed > failed:  # e.g. 429: back off a little instead of spinning
                await asyncio.sleep(error_pause)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - begin
    return result


async def open_loop(
    session: aiohttp.ClientSession,
    target: Target,
    body: dict[str, Any],
    rate: float,
    duration: float,
    timeout: float = 30.0,
) -> Result:
    """Requests at a fixed rate for `duration` seconds, whatever the target's speed."""
    result = Result()
    begin = time.perf_counter()
    tasks = []
    for index in range(int(rate * duration)):
        scheduled = begin + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(
            asyncio.create_task(one_request(session, target, body, result, scheduled, timeout))
        )
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - begin
    return result
