"""Gateway overhead: direct-to-upstream vs a bare TCP relay vs Sparkplane vs LiteLLM, in one run.

    .venv/bin/python -m bench.gateway_overhead [--duration 5] [--rounds 2] [--no-litellm]

The same fast upstream (bench/upstream.py) sits behind every target. Targets alternate within
each scenario (direct, sparkplane, litellm, direct, ...), so all share the machine's state; the
table gives each gateway's added latency against the direct baseline of the same run. The
bare TCP relay (bench/tcp_relay.py) adds one hop and nothing else: the floor for any gateway
on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import gateways
from bench.loadgen import Result, Target, closed_loop, open_loop, percentile

PLAIN = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
STREAM = {**PLAIN, "max_tokens": 50, "stream": True, "stream_options": {"include_usage": True}}


@dataclass
class Scenario:
    name: str
    body: dict[str, Any]
    concurrency: int = 0  # closed loop when set
    rate: float = 0.0  # open loop when set

    async def run(self, session: aiohttp.ClientSession, target: Target, seconds: float) -> Result:
        if self.concurrency:
            return await closed_loop(session, target, self.body, self.concurrency, seconds)
        return await open_loop(session, target, self.body, self.rate, seconds)


SCENARIOS = [
    Scenario("closed loop, 32 concurrent", PLAIN, concurrency=32),
    Scenario("open loop, 100 req/s", PLAIN, rate=100),
    Scenario("open loop, 200 req/s", PLAIN, rate=200),
    Scenario("64 streams x 50 tokens at 50 tok/s", STREAM, concurrency=64),
]


@dataclass
class Measured:
    result: Result
    cpu_s: float = 0.0
    rss_mb: float = 0.0


async def measure(
    targets: list[Target], procs: dict[str, gateways.Proc], seconds: float, rounds: int
) -> dict[str, dict[str, Measured]]:
    out: dict[str, dict[str, Measured]] = {}
    # Idle client connections are dropped before the servers' 5 s keep-alive, so the load
    # generator never races a server closing the connection it is about to reuse.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3)
    async with aiohttp.ClientSession(connector=connector) as session:
        for target in targets:  # warm up connection pools and caches
            await closed_loop(session, target, PLAIN, 8, 1.0)
        for scenario in SCENARIOS:
            print(f"... {scenario.name}", flush=True)
            row = out.setdefault(scenario.name, {t.name: Measured(Result()) for t in targets})
            for _ in range(rounds):
                for target in targets:
                    proc = procs.get(target.name)
                    cpu_before = proc.cpu_seconds() if proc else 0.0
                    result = await scenario.run(session, target, seconds)
                    row[target.name].result.merge(result)
                    if proc:
                        row[target.name].cpu_s += proc.cpu_seconds() - cpu_before
                        row[target.name].rss_mb = max(row[target.name].rss_mb, proc.rss_mb())
    return out


def ms(value: float) -> str:
    return f"{value * 1000:8.2f}"


def table(name: str, row: dict[str, Measured]) -> list[str]:
    base = row["direct"].result
    streams = bool(base.ttfts)
    lines = [
        f"\n## {name}",
        "target        ok  err   req/s    p50 ms   p99 ms  +p50 ms  +p99 ms"
        + ("  TTFT p50 +TTFT ms    tok/s" if streams else "")
        + "  p50 x direct  CPU ms/req  RSS MB",
    ]
    b50, b99 = percentile(base.latencies, 50), percentile(base.latencies, 99)
    bttft = percentile(base.ttfts, 50)
    for target, m in row.items():
        r = m.result
        p50, p99 = percentile(r.latencies, 50), percentile(r.latencies, 99)
        line = f"{target:<11} {r.ok:5d} {r.failed:4d} {r.throughput():7.1f}  {ms(p50)} {ms(p99)}"
        line += f" {ms(p50 - b50)} {ms(p99 - b99)}" if target != "direct" else " " * 18
        if streams:
            ttft = percentile(r.ttfts, 50)
            line += f" {ms(ttft)}" + (f" {ms(ttft - bttft)}" if target != "direct" else " " * 9)
            line += f" {r.chunks / r.elapsed:8.0f}"
        # For "direct" these are the upstream's own: the floor of a minimal ASGI server.
        cpu = f"{m.cpu_s / max(r.ok, 1) * 1000:9.2f}"
        rss = f"{m.rss_mb:7.0f}"
        line += f"  {p50 / b50:11.1f}x  {cpu}  {rss}"
        if r.errors:
            line += f"  errors: {dict(r.errors)}"
        lines.append(line)
    return lines


def summary(results: dict[str, dict[str, Measured]]) -> dict[str, Any]:
    """Machine-readable numbers for docs/benchmarks.md."""
    out: dict[str, Any] = {}
    for scenario, row in results.items():
        for target, m in row.items():
            r = m.result
            out.setdefault(scenario, {})[target] = {
                "ok": r.ok,
                "errors": dict(r.errors),
                "req_per_s": round(r.throughput(), 1),
                "p50_ms": round(percentile(r.latencies, 50) * 1000, 3),
                "p99_ms": round(percentile(r.latencies, 99) * 1000, 3),
                "ttft_p50_ms": round(percentile(r.ttfts, 50) * 1000, 3) if r.ttfts else None,
                "tokens_per_s": round(r.chunks / r.elapsed, 1) if r.ttfts else None,
                "cpu_ms_per_req": round(m.cpu_s / max(r.ok, 1) * 1000, 3),
                "rss_mb": round(m.rss_mb, 1),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="gateway overhead benchmark")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per target and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--no-sparkplane", action="store_true")
    parser.add_argument(
        "--no-relay", action="store_true", help="leave out 'tcp-relay' (bench/tcp_relay.py)"
    )
    parser.add_argument("--litellm-workers", type=int, default=2)
    parser.add_argument(
        "--also-queued-audit",
        action="store_true",
        help="add a target 'sp-queued': Sparkplane with SPARKPLANE_AUDIT_WAIT=queued",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--tmpfs",
        action="store_true",
        help="Sparkplane's data dir (SQLite, audit) on /dev/shm: fsync becomes free, which "
        "separates the cost of durable audit commits from the proxy's own",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other work on the machine skews every number
    procs: dict[str, gateways.Proc] = {}  # "direct" is the upstream itself
    tmp_parent = "/dev/shm" if args.tmpfs else None
    with tempfile.TemporaryDirectory(prefix="sparkplane-bench-", dir=tmp_parent) as tmp:
        try:
            procs["direct"] = gateways.start_upstream(tokens_per_s=50)
            upstream_url = procs["direct"].url
            keys = {"direct": "unused"}
            if not args.no_relay:  # the floor: one extra hop, no HTTP work at all
                procs["tcp-relay"] = gateways.start_tcp_relay(upstream_url)
                keys["tcp-relay"] = "unused"
            if not args.no_sparkplane:
                env = gateways.sparkplane_env(Path(tmp) / "sp", upstream_url, capacity=512)
                keys["sparkplane"] = gateways.create_tenant_key(
                    env, "bench", "--max-concurrency", "512"
                )
                procs["sparkplane"] = gateways.start_sparkplane(env)
                if args.also_queued_audit:  # responses not held for the audit commit
                    queued = gateways.sparkplane_env(Path(tmp) / "spq", upstream_url, 512)
                    queued["SPARKPLANE_AUDIT_WAIT"] = "queued"
                    keys["sp-queued"] = gateways.create_tenant_key(
                        queued, "bench", "--max-concurrency", "512"
                    )
                    procs["sp-queued"] = gateways.start_sparkplane(queued)
            if not args.no_litellm:
                procs["litellm"] = gateways.start_litellm(
                    upstream_url, Path(tmp), args.litellm_workers
                )
                keys["litellm"] = procs["litellm"].key
            targets = [
                Target(name, proc.url, {"Authorization": f"Bearer {keys[name]}"})
                for name, proc in procs.items()
            ]
            results = asyncio.run(measure(targets, procs, args.duration, args.rounds))
        finally:
            for proc in reversed(procs.values()):
                proc.stop()
    print(
        f"\n# Gateway overhead ({args.rounds} rounds x {args.duration:.0f} s per target, "
        f"alternating; LiteLLM workers: {args.litellm_workers}; 1-min load average before the"
        f" run {load_before:.1f} on {os.cpu_count()} CPUs; Sparkplane data dir on"
        f" {'tmpfs' if args.tmpfs else 'disk'})"
    )
    for name, row in results.items():
        print("\n".join(table(name, row)))
    if args.json:
        args.json.write_text(json.dumps(summary(results), indent=2))


if __name__ == "__main__":
    main()
