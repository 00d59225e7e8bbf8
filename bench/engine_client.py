"""The gateway's engine client against aiohttp's, one request at a time, in one process.

    .venv/bin/python -m bench.engine_client [--requests 3000] [--rounds 3]

Both post the same chat completion to bench/upstream.py and read the whole answer; rounds
alternate between the two clients. CPU is this process's (`time.process_time`), so it is the
client's own cost per request; wall time includes the upstream's.
"""

from __future__ import annotations

import argparse
import os
import time

import aiohttp
import orjson
import uvloop

from bench import gateways
from controlplane.engines.client import EngineClient

BODY = orjson.dumps(
    {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
)
HEADERS = {"Content-Type": "application/json", "X-Request-Id": "req_bench"}


async def with_aiohttp(url: str, requests: int) -> tuple[float, float]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        timeout = aiohttp.ClientTimeout(total=30)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(requests):
            response = await session.post(
                f"{url}/chat/completions", data=BODY, headers=HEADERS, timeout=timeout
            )
            await response.read()
            response.close()
        return time.process_time() - cpu, time.perf_counter() - wall


async def with_engine_client(url: str, requests: int) -> tuple[float, float]:
    client = EngineClient(url, connect_timeout=5, keepalive=4)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(requests):
            response = await client.request(
                "POST", f"{client.base_path}/chat/completions", BODY, HEADERS, time_limit=30
            )
            await response.read()
            response.close()
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.close()


async def measure(url: str, requests: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "engine_client": []}
    await with_aiohttp(url, 200)  # warm-up: imports, first connections
    await with_engine_client(url, 200)
    for _ in range(rounds):
        results["aiohttp"].append(await with_aiohttp(url, requests))
        results["engine_client"].append(await with_engine_client(url, requests))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="engine client vs aiohttp, sequential requests")
    parser.add_argument("--requests", type=int, default=3000, help="requests per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    upstream = gateways.start_upstream()
    try:
        results = uvloop.run(measure(upstream.url, args.requests, args.rounds))
    finally:
        upstream.stop()
    print(
        f"\n# Engine client ({args.rounds} rounds x {args.requests} sequential requests, "
        f"alternating; 1-min load average before the run {load:.1f})\n"
    )
    print("client          CPU us/req   wall us/req   CPU x engine_client")
    per_request = {
        name: (
            sum(cpu for cpu, _ in runs) / (len(runs) * args.requests) * 1e6,
            sum(wall for _, wall in runs) / (len(runs) * args.requests) * 1e6,
        )
        for name, runs in results.items()
    }
    base = per_request["engine_client"][0]
    for name, (cpu, wall) in per_request.items():
        print(f"{name:<14} {cpu:11.0f}  {wall:12.0f}   {cpu / base:18.1f}x")


if __name__ == "__main__":
    main()
