"""Weighted fair sharing of a saturated engine, through Sparkplane vs straight to the engine.

    .venv/bin/python -m bench.fairness [--duration 10] [--rounds 2] [--time-scale 0.1]

The engine simulator (capacity 32) is offered 3x its capacity by four tenants with weights
1:1:2:4 (24 closed-loop clients each, tenant cap 20). As the installer sets it, the gateway lets
the engine hold a quarter of a batch waiting beyond it (`SPARKPLANE_ENGINE_QUEUE` 8), which the
engine serves in the gateway's fair order (`--scheduling-policy priority`); `--engine-queue 0`
(no queue in the engine) and `--fcfs-engine` (its queue first come first served, no tags)
measure the other arrangements. Rounds alternate between the engine alone
(vLLM's first-come-first-served queue: the baseline) and Sparkplane in front of it. Measured at
the engine: slot use, each tenant's share of slot time against its weight, and the most
requests in flight per tenant against its cap. The target share is the weighted share with caps
applied (a capped tenant's spare slots are shared by the others' weights).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench import gateways
from bench.loadgen import Result, Target, closed_loop
from tests.enginesim import start_simulator

TENANTS = {"w1-a": 1, "w1-b": 1, "w2": 2, "w4": 4}
CAPACITY = 32
BODY = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}


async def phase(
    sim_url: str, targets: list[Target], clients: int, warmup: float, seconds: float
) -> tuple[dict[str, Any], dict[str, Result]]:
    """Offer the load, measure at the engine for `seconds` after `warmup`, drain."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3)  # below servers' 5 s
    async with aiohttp.ClientSession(connector=connector) as session:

        async def sim(method: str, path: str) -> dict[str, Any]:
            async with session.request(method, sim_url + path, json={}) as resp:
                resp.raise_for_status()
                return dict(await resp.json())

        await sim("POST", "/sim/reset")  # peaks cover the whole phase, warm-up included
        loads = [
            asyncio.create_task(closed_loop(session, t, BODY, clients, warmup + seconds, 120))
            for t in targets
        ]
        await asyncio.sleep(warmup)
        before = await sim("GET", "/sim/stats")
        await asyncio.sleep(seconds)
        stats = window(before, await sim("GET", "/sim/stats"))
        results = await asyncio.gather(*loads)
        while (await sim("GET", "/sim/stats"))["in_flight"]:  # empty before the next phase
            await asyncio.sleep(0.1)
    return stats, {t.name: r for t, r in zip(targets, results, strict=True)}


def window(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Busy and per-tenant slot time between two snapshots; peaks and counts from `after`."""
    out = {**after, "busy_slot_seconds": after["busy_slot_seconds"] - before["busy_slot_seconds"]}
    out["seconds_since_reset"] = after["seconds_since_reset"] - before["seconds_since_reset"]
    out["tenants"] = {}
    for name, t in after["tenants"].items():
        earlier = before["tenants"].get(name, {})
        out["tenants"][name] = {
            **t,
            "slot_seconds": t["slot_seconds"] - earlier.get("slot_seconds", 0.0),
            "completed": t["completed"] - earlier.get("completed", 0),
        }
    return out


def fair_targets(capacity: int, weights: dict[str, int], caps: dict[str, int]) -> dict[str, float]:
    """Expected share of each tenant: weighted shares, clamped at caps, spare re-shared."""
    share: dict[str, float] = {}
    left, active = float(capacity), dict(weights)
    while active:
        unit = left / sum(active.values())
        capped = {n: w for n, w in active.items() if unit * w >= caps[n]}
        if not capped:
            share.update({n: unit * w for n, w in active.items()})
            break
        for name in capped:
            share[name] = caps[name]
            left -= caps[name]
            del active[name]
    total = sum(share.values())
    return {n: share.get(n, 0.0) / total for n in weights}


def merge(total: dict[str, Any], stats: dict[str, Any]) -> None:
    total["busy"] = total.get("busy", 0.0) + stats["busy_slot_seconds"]
    total["seconds"] = total.get("seconds", 0.0) + stats["seconds_since_reset"]
    for name, t in stats["tenants"].items():
        mine = total.setdefault("tenants", {}).setdefault(
            name, {"slot_seconds": 0.0, "completed": 0, "max_in_flight": 0}
        )
        mine["slot_seconds"] += t["slot_seconds"]
        mine["completed"] += t["completed"]
        mine["max_in_flight"] = max(mine["max_in_flight"], t["max_in_flight"])


def report(
    totals: dict[str, dict[str, Any]], errors: dict[str, Counter[str]], caps: dict[str, int]
) -> str:
    targets = fair_targets(CAPACITY, TENANTS, caps)
    lines = [
        "tenant  weight  target  | direct share  x target | sparkplane share  x target"
        "  max in-flight/cap  completed  client errors"
    ]
    shares = {}
    for mode, total in totals.items():
        all_slots = sum(t["slot_seconds"] for t in total["tenants"].values()) or 1.0
        shares[mode] = {n: t["slot_seconds"] / all_slots for n, t in total["tenants"].items()}
    sp = totals.get("sparkplane", {"tenants": {}})["tenants"]
    for name, weight in TENANTS.items():
        target, cap = targets[name], caps[name]
        s = shares.get("sparkplane", {}).get(name, 0.0)
        direct = f"{'(not run)':>12}{'':10}"
        if "direct" in shares:
            d = shares["direct"].get(name, 0.0)
            direct = f"{d:12.1%}  {d / target:7.2f}x"
        peak = sp.get(name, {}).get("max_in_flight", 0)
        lines.append(
            f"{name:<7} {weight:6d}  {target:6.1%}  | {direct} |"
            f" {s:16.1%}  {s / target:7.2f}x  {peak:9d}/{cap:<7d}"
            f" {sp.get(name, {}).get('completed', 0):9d}  {dict(errors.get(name) or {}) or '-'}"
        )
    for mode, total in totals.items():
        use = total["busy"] / (CAPACITY * total["seconds"])
        lines.append(f"engine slot use, {mode}: {use:.1%} of {CAPACITY} slots")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="weighted fair sharing benchmark")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--clients", type=int, default=24, help="closed-loop clients per tenant")
    parser.add_argument("--cap", type=int, default=20, help="each tenant's max concurrency")
    parser.add_argument(
        "--cap-for",
        action="append",
        default=[],
        metavar="TENANT=N",
        help=f"another cap for one tenant of {sorted(TENANTS)}, e.g. w4=12 (a binding cap)",
    )
    parser.add_argument("--no-direct", action="store_true", help="skip the FCFS baseline")
    parser.add_argument(
        "--engine-queue", type=int, default=CAPACITY // 4,
        help="SPARKPLANE_ENGINE_QUEUE (the installer sets a quarter of max-num-seqs: 8 here)",
    )  # fmt: skip
    parser.add_argument(
        "--fcfs-engine", action="store_true",
        help="the engine's queue first come first served (tags sent, and ignored)",
    )  # fmt: skip
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other work on the machine skews slot use
    caps = dict.fromkeys(TENANTS, args.cap)
    for item in args.cap_for:
        name, _, value = item.partition("=")
        if name not in TENANTS or not value.isdigit() or int(value) < 1:
            parser.error(f"--cap-for wants TENANT=N with TENANT in {sorted(TENANTS)}, got {item!r}")
        caps[name] = int(value)
    policy = "fcfs" if args.fcfs_engine else "priority"
    sim = start_simulator(
        mode="subprocess",
        max_num_seqs=CAPACITY,
        time_scale=args.time_scale,
        scheduling_policy=policy,
    )
    gateway = None
    workdir = tempfile.TemporaryDirectory(prefix="sparkplane-fair-")
    tmp = workdir.name
    try:
        env = gateways.sparkplane_env(Path(tmp), sim.url, capacity=CAPACITY)
        env["SPARKPLANE_ENGINE_QUEUE"] = str(args.engine_queue)
        keys = {
            name: gateways.create_tenant_key(
                env,
                name,
                "--weight",
                str(weight),
                "--max-concurrency",
                str(caps[name]),
                "--queue-size",
                "256",
                "--queue-timeout",
                "120",
            )
            for name, weight in TENANTS.items()
        }
        gateway = gateways.start_sparkplane(env)
        modes: dict[str, list[Target]] = {
            "sparkplane": [
                Target(n, gateway.url, {"Authorization": f"Bearer {keys[n]}"}, {"user": n})
                for n in TENANTS
            ]
        }
        if not args.no_direct:  # the same clients straight at the engine
            modes["direct"] = [Target(n, sim.url, {}, {"user": n}) for n in TENANTS]
        totals: dict[str, dict[str, Any]] = {}
        errors: dict[str, Counter[str]] = {}
        for round_no in range(args.rounds):
            for mode in sorted(modes):  # direct first, then sparkplane
                print(f"... round {round_no + 1}: {mode}", flush=True)
                stats, results = asyncio.run(
                    phase(sim.base_url, modes[mode], args.clients, args.warmup, args.duration)
                )
                merge(totals.setdefault(mode, {}), stats)
                if mode == "sparkplane":
                    for name, result in results.items():
                        errors.setdefault(name, Counter()).update(result.errors)
    finally:
        if gateway is not None:
            gateway.stop()
        sim.stop()
        workdir.cleanup()  # after the gateway stopped writing there
    print(
        f"\n# Fairness: engine {CAPACITY} slots and a {policy} queue, gateway engine queue"
        f" {args.engine_queue}, weights 1:1:2:4, {args.clients} clients per tenant"
        f" (3x capacity), caps {caps}, {args.rounds} x {args.duration:.0f} s per mode,"
        f" time scale {args.time_scale}; 1-min load average before the run {load_before:.1f}"
    )
    print(report(totals, errors, caps))


if __name__ == "__main__":
    main()
