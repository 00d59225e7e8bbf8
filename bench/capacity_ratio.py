"""Aggregate tok/s through Sparkplane against the engine alone, on the demo's real vLLM.

    .venv/bin/python -m bench.capacity_ratio --root /tmp/vr [--streams 16 8] [--rounds 3]
        [--duration 10] [--tokens 64] [--env SPARKPLANE_X=Y ...]

`--root` is an installed appliance whose engine is running (`sparkplane demo --root R`): its
engine URL, served model and max-num-seqs are read from `engine.args`. This tree's `sparkplane
serve` is started with a temporary SQLite data dir in front of that engine, with
`SPARKPLANE_ENGINE_CAPACITY` = max-num-seqs as the installer sets it, and one tenant whose caps
never bind. Each level is a closed loop of N streams (random-free 64-word prompts, `--tokens`
output tokens with `ignore_eos`), `--duration` seconds on each target, alternating direct and
through the gateway `--rounds` times (the order flips every round), so both see the same noise.

Columns: completion tok/s over the phase (tokens whose stream finished in it / its length),
median and p99 TTFT, CPU seconds of the gateway's process per 1,000 tokens, `running` = the
engine's batch (vLLM's `num_requests_running`, sampled 20 times a second), and the ratios of
the gateway's tok/s and batch to the engine's alone (the issue's bar: at least 0.98). On a
shared CPU the tok/s ratio moves with everything else the machine runs; the batch ratio says
whether admission left the engine emptier, which is the property the bar is about.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from bench import gateways
from bench.loadgen import percentile
from controlplane.appliance.layout import Layout, read_args_file

RUNNING = re.compile(r"^vllm:num_requests_running\{[^}]*\} (\S+)", re.M)


@dataclass
class Phase:
    tokens: int = 0
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    running: list[float] = field(default_factory=list)  # vLLM's num_requests_running samples

    def merge(self, other: Phase) -> None:
        self.running += other.running
        self.tokens += other.tokens
        self.ttfts += other.ttfts
        self.errors += other.errors
        self.seconds += other.seconds
        self.cpu += other.cpu


async def stream_once(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                      body: bytes, phase: Phase) -> None:  # fmt: skip
    started = time.perf_counter()
    first = None
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            await response.read()
            phase.errors += 1
            return
        async for line in response.content:
            if first is None and line.startswith(b'data: {"id"') and b'"content":"' in line:
                first = time.perf_counter()
                phase.ttfts.append(first - started)
            if b'"usage":{' in line and b'"choices":[]' in line:
                usage = orjson.loads(line[6:])["usage"]
                phase.tokens += int(usage["completion_tokens"])


async def sample_running(session: aiohttp.ClientSession, metrics_url: str, end: float,
                         phase: Phase) -> None:  # fmt: skip
    """The engine's batch: vLLM's running sequences, 20 times a second, until `end`."""
    while time.perf_counter() < end:
        async with session.get(metrics_url) as response:
            text = await response.text()
        found = RUNNING.search(text)
        if found:
            phase.running.append(float(found.group(1)))
        await asyncio.sleep(0.05)


async def closed_loop(url: str, key: str, model: str, streams: int, tokens: int,
                      duration: float, metrics_url: str) -> Phase:  # fmt: skip
    body = orjson.dumps({
        "model": model, "max_tokens": tokens, "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True}, "temperature": 0,
        "messages": [{"role": "user", "content": "Summarise: " + "data " * 64}],
    })  # fmt: skip
    headers = {"Content-Type": "application/json"} | (
        {"Authorization": f"Bearer {key}"} if key else {}
    )
    phase = Phase()
    end = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while time.perf_counter() < end:
                await stream_once(session, url + "/chat/completions", headers, body, phase)

        started = time.perf_counter()
        sampler = sample_running(session, metrics_url, end - 0.5, phase)
        await asyncio.gather(*(client() for _ in range(streams)), sampler)
        phase.seconds = time.perf_counter() - started
    return phase


def row(streams: int, name: str, phase: Phase) -> str:
    rate = phase.tokens / phase.seconds
    cpu = phase.cpu / phase.tokens * 1000 if name == "gateway" else 0.0
    ttft = (
        f"{percentile(phase.ttfts, 50) * 1000:>7.0f}ms {percentile(phase.ttfts, 99) * 1000:>7.0f}ms"
    )
    running = statistics.fmean(phase.running or [0])
    return (
        f"{streams:>7} {name:>8} {rate:>8.1f} {ttft} {cpu:>12.3f} {running:>7.2f} {phase.errors:>6}"
    )


def run(args: argparse.Namespace) -> None:
    layout = Layout.at(args.root)
    engine_args = read_args_file(layout.engine_args)
    port = engine_args[engine_args.index("--port") + 1]
    model = engine_args[engine_args.index("--served-model-name") + 1]
    seqs = int(engine_args[engine_args.index("--max-num-seqs") + 1])
    engine_url = f"http://127.0.0.1:{port}/v1"
    metrics = f"http://127.0.0.1:{port}/metrics"
    print(f"load average at start: {os.getloadavg()}; engine {engine_url} max-num-seqs {seqs}")
    with tempfile.TemporaryDirectory(prefix="sp-capacity-") as tmp:
        env = gateways.sparkplane_env(Path(tmp), engine_url, seqs)
        env["SPARKPLANE_ENGINE_CAPACITY"] = str(args.capacity or seqs)
        env |= dict(pair.split("=", 1) for pair in args.env)
        key = gateways.create_tenant_key(env, "bench", "--max-concurrency", "512")
        gateway = gateways.start_sparkplane(env)
        try:
            targets = {"direct": (engine_url, ""), "gateway": (gateway.url, key)}
            print(f"{'streams':>7} {'target':>8} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p99':>9} "
                  f"{'CPU s/1k tok':>12} {'running':>7} {'errors':>6}")  # fmt: skip
            for streams in args.streams or [16, seqs]:
                totals = {name: Phase() for name in targets}
                asyncio.run(closed_loop(engine_url, "", model, streams, args.tokens, 2.0, metrics))
                for round_ in range(args.rounds):
                    order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
                    for name in order:
                        url, secret = targets[name]
                        cpu = gateway.cpu_seconds()
                        phase = asyncio.run(
                            closed_loop(
                                url, secret, model, streams, args.tokens, args.duration, metrics
                            )
                        )
                        phase.cpu = gateway.cpu_seconds() - cpu
                        totals[name].merge(phase)
                for name, phase in totals.items():
                    print(row(streams, name, phase))
                ratio = (totals["gateway"].tokens / totals["gateway"].seconds) / (
                    totals["direct"].tokens / totals["direct"].seconds
                )
                batch = statistics.fmean(totals["gateway"].running or [0]) / statistics.fmean(
                    totals["direct"].running or [1]
                )
                print(f"{streams:>7} {'ratio':>8} {ratio:>8.3f} {'':>9} {'':>9} {'':>12} "
                      f"{batch:>7.3f}")  # fmt: skip
        finally:
            gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--streams", type=int, nargs="*")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--capacity", type=int, help="SPARKPLANE_ENGINE_CAPACITY [max-num-seqs]")
    parser.add_argument("--env", nargs="*", default=[], help="SPARKPLANE_X=Y for the gateway")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
