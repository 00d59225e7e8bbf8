"""Sparkplane against an earlier Sparkplane: two source trees, one upstream, alternating.

    git worktree add /tmp/sp-before <commit>
    .venv/bin/python -m bench.gateway_ab --before /tmp/sp-before [--rate 200] [--rounds 4]

    # one tree, two settings: --before-env/--after-env add SPARKPLANE_* variables to one side
    .venv/bin/python -m bench.gateway_ab --before . --after-env SPARKPLANE_AUDIT_WAIT=queued
    # one tree, two tenants: --after-tenant=--capture-content (an option of `tenants create`)
    .venv/bin/python -m bench.gateway_ab --before . --after-tenant=--capture-content

On this noisy 2-core machine the same version's added latency moves by more than most changes
do between two runs; served side by side, alternating every 5 s, both versions see the same
noise. Each tree is run as `sparkplane serve` with its own temporary SQLite data dir and
PYTHONPATH pointing at the tree (the venv's dependencies serve both: an old tree needs no
package the venv lacks).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

import aiohttp

from bench import gateways
from bench.gateway_overhead import PLAIN
from bench.loadgen import Result, Target, closed_loop, open_loop, percentile

REPO = Path(__file__).resolve().parent.parent


async def alternate(
    targets: dict[str, Target], procs: dict[str, gateways.Proc], rate: float, rounds: int
) -> tuple[dict[str, Result], dict[str, float]]:
    results = {name: Result() for name in targets}
    cpu = dict.fromkeys(targets, 0.0)
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3)
    async with aiohttp.ClientSession(connector=connector) as session:
        for target in targets.values():  # warm up connection pools and caches
            await closed_loop(session, target, PLAIN, 8, 1.5)
        for _ in range(rounds):
            for name, target in targets.items():
                proc = procs.get(name)
                before = proc.cpu_seconds() if proc else 0.0
                results[name].merge(await open_loop(session, target, PLAIN, rate, 5))
                if proc:
                    cpu[name] += proc.cpu_seconds() - before
    return results, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description="two Sparkplane source trees, side by side")
    parser.add_argument("--before", type=Path, required=True, help="the earlier source tree")
    parser.add_argument("--after", type=Path, default=REPO, help="default: this repository")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--rounds", type=int, default=4, help="5 s per tree and round")
    for side in ("before", "after"):
        parser.add_argument(
            f"--{side}-env", action="append", default=[], type=_env_pair, metavar="KEY=VALUE",
            help=f"an environment variable for the {side} server (repeatable)",
        )  # fmt: skip
        parser.add_argument(
            f"--{side}-tenant", action="append", default=[], metavar="OPTION",
            help=f"an option of `tenants create` for the {side} server's tenant (repeatable)",
        )  # fmt: skip
    args = parser.parse_args()
    extra_env = {side: dict(getattr(args, f"{side}_env")) for side in ("before", "after")}
    tenant_options = {side: getattr(args, f"{side}_tenant") for side in ("before", "after")}
    load = os.getloadavg()[0]
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    procs: dict[str, gateways.Proc] = {}
    with tempfile.TemporaryDirectory(prefix="sparkplane-ab-") as tmp:
        try:
            procs["direct"] = gateways.start_upstream()
            keys = {"direct": "unused"}
            for name, tree in trees.items():
                env = gateways.sparkplane_env(Path(tmp) / name, procs["direct"].url, 512)
                env["PYTHONPATH"] = str(tree)
                env.update(extra_env[name])
                keys[name] = gateways.create_tenant_key(
                    env, "bench", "--max-concurrency", "512", *tenant_options[name]
                )
                procs[name] = gateways.start_sparkplane(env)
            targets = {
                name: Target(name, proc.url, {"Authorization": f"Bearer {keys[name]}"})
                for name, proc in procs.items()
            }
            results, cpu = asyncio.run(alternate(targets, procs, args.rate, args.rounds))
        finally:
            for proc in reversed(procs.values()):
                proc.stop()
    print(
        f"\n# Sparkplane A/B at {args.rate:g} req/s, open loop ({args.rounds} rounds x 5 s per "
        f"target, alternating; 1-min load average before the run {load:.1f})\n"
        f"before: {trees['before']} {_show(extra_env['before'])} "
        f"{' '.join(tenant_options['before'])}\n"
        f"after:  {trees['after']} {_show(extra_env['after'])} {' '.join(tenant_options['after'])}"
    )
    print_added(results, cpu, list(trees), "tree")


def print_added(results: dict[str, Result], cpu: dict[str, float], names: list[str],
                title: str) -> None:  # fmt: skip
    """Each target's latency added to the direct one's, and its CPU per request."""
    base = results["direct"].latencies
    b50, b99 = percentile(base, 50), percentile(base, 99)
    print(f"direct: p50 {b50 * 1000:.2f} ms, p99 {b99 * 1000:.2f} ms\n")
    print(f"{title:<7}   ok  err   +p50 ms  +p99 ms  CPU ms/req")
    for name in names:
        r = results[name]
        added50 = (percentile(r.latencies, 50) - b50) * 1000
        added99 = (percentile(r.latencies, 99) - b99) * 1000
        per_request = cpu[name] / max(r.ok, 1) * 1000
        line = f"{name:<7} {r.ok:5d} {r.failed:4d}  {added50:8.2f} {added99:8.2f}"
        print(f"{line}  {per_request:10.2f}")


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _show(env: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in env.items())


if __name__ == "__main__":
    main()
