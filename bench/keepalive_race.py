"""Does Sparkplane survive an engine that closes idle connections (vLLM: after 5 s)?

    .venv/bin/python -m bench.keepalive_race [--bursts 30] [--keepalive 1.0]

The engine simulator closes idle keep-alive connections after `--keepalive` seconds; bursts of
requests go through Sparkplane with idle gaps just around that time, so Sparkplane's pooled
engine connections are reused right when the engine closes them. Clients never reuse their own
connections, so every non-200 answer is the gateway's. Prints the status counts: a gateway that
drops idle connections before the engine does (or retries a request that never left) shows
only 200s.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections import Counter
from pathlib import Path

import aiohttp
import orjson

from bench import gateways
from tests.enginesim import start_simulator

BODY = orjson.dumps(
    {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
)


async def bursts(url: str, key: str, count: int, size: int, keepalive: float) -> Counter[int]:
    statuses: Counter[int] = Counter()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.post(url + "/chat/completions", data=BODY, headers=headers) as r:
                await r.read()
                statuses[r.status] += 1

        for index in range(count):
            await asyncio.gather(*(one() for _ in range(size)))
            # Idle gaps from 3 % below to 3 % above the engine's keep-alive.
            await asyncio.sleep(keepalive * (0.97 + (index % 7) * 0.01))
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description="stale engine connection check")
    parser.add_argument("--bursts", type=int, default=30)
    parser.add_argument("--size", type=int, default=32, help="requests per burst")
    parser.add_argument("--keepalive", type=float, default=1.0, help="engine keep-alive, s")
    args = parser.parse_args()
    sim = start_simulator(
        mode="subprocess", max_num_seqs=64, time_scale=0.001, keepalive_s=args.keepalive
    )
    gateway = None
    workdir = tempfile.TemporaryDirectory(prefix="sparkplane-keepalive-")
    tmp = workdir.name
    try:
        env = gateways.sparkplane_env(Path(tmp), sim.url, capacity=64)
        key = gateways.create_tenant_key(env, "t", "--max-concurrency", "64")
        gateway = gateways.start_sparkplane(env)
        statuses = asyncio.run(bursts(gateway.url, key, args.bursts, args.size, args.keepalive))
    finally:
        if gateway is not None:
            gateway.stop()
        sim.stop()
        workdir.cleanup()  # after the gateway stopped writing there
    total = sum(statuses.values())
    print(f"statuses through Sparkplane: {dict(sorted(statuses.items()))} of {total} requests")


if __name__ == "__main__":
    main()
