"""The gateway's latency with the SIEM feed off, its receiver dead, stuck, or reading; and how
fast (and at what CPU) the feed drains a backlog.

    .venv/bin/python -m bench.siem_feed [--rate 200] [--rounds 4]
    .venv/bin/python -m bench.siem_feed --catch-up 50000

Four `sparkplane serve` processes of this tree, one upstream, served side by side and
alternating every 5 s (as `gateway_ab.py` does), each with its own SQLite data dir:

- off:   no SPARKPLANE_SIEM_TARGET;
- dead:  tcp:// to a port where nothing listens (connection refused, reconnect backoff);
- stuck: tcp:// to a receiver that accepts and never reads (sends block until they time out);
- live:  tcp:// to a receiver that reads and discards (the feed's cost when it delivers).

The receivers run as threads of this process; they do no work while the load runs.

`--catch-up N`: N `api.completion` entries in a temporary SQLite chain, then one feed to a
reading receiver; prints entries per second and the process's CPU while it drains them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench import gateways
from bench.audit import api_fields
from bench.gateway_ab import alternate, print_added
from bench.loadgen import Target
from controlplane.audit import AuditWriter
from controlplane.audit.feed.sender import SiemFeed
from controlplane.audit.feed.transports import make_transport, parse_target
from tests.controlplane.audit.conftest import sqlite_store
from tests.controlplane.audit.receivers import TcpReceiver


async def catch_up(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sparkplane-siem-") as tmp:
        engine = sqlite_store(Path(tmp))
        writer = AuditWriter(engine, Path(tmp) / "audit-signing.key")
        await writer.start()
        fields = api_fields(0)
        for start in range(0, count, 1000):
            await asyncio.gather(*(writer.record("api.completion", tenant="bench", **fields)
                                   for _ in range(start, min(count, start + 1000))))  # fmt: skip
        await writer.close()
        receiver = TcpReceiver(stuck=False)
        feed = SiemFeed(engine, make_transport(parse_target(f"tcp://127.0.0.1:{receiver.port}")))
        started, before = time.monotonic(), os.times()
        feed.start()
        while feed.status.sent < count:
            await asyncio.sleep(0.02)
        elapsed, after = time.monotonic() - started, os.times()
        feed.stop()
        receiver.close()
        engine.dispose()
    cpu = (after.user - before.user) + (after.system - before.system)
    print(
        f"drained {count} entries in {elapsed:.2f} s: {count / elapsed:,.0f} entries/s; "
        f"process CPU {cpu:.2f} s = {cpu / elapsed:.0%} of a core, "
        f"{cpu / count * 1e6:.0f} us per entry (load average before: {os.getloadavg()[0]:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="gateway latency against the SIEM feed's state")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--rounds", type=int, default=4, help="5 s per target and round")
    parser.add_argument("--catch-up", type=int, default=0, metavar="N", help="drain N entries")
    args = parser.parse_args()
    if args.catch_up:
        asyncio.run(catch_up(args.catch_up))
        return
    load = os.getloadavg()[0]
    stuck, live = TcpReceiver(stuck=True), TcpReceiver(stuck=False)
    feeds = {
        "off": None,
        "dead": f"tcp://127.0.0.1:{gateways.free_port()}",
        "stuck": f"tcp://127.0.0.1:{stuck.port}",
        "live": f"tcp://127.0.0.1:{live.port}",
    }
    procs: dict[str, gateways.Proc] = {}
    with tempfile.TemporaryDirectory(prefix="sparkplane-siem-") as tmp:
        try:
            procs["direct"] = gateways.start_upstream()
            keys = {"direct": "unused"}
            for name, target in feeds.items():
                env = gateways.sparkplane_env(Path(tmp) / name, procs["direct"].url, 512)
                if target:
                    env["SPARKPLANE_SIEM_TARGET"] = target
                keys[name] = gateways.create_tenant_key(env, "bench", "--max-concurrency", "512")
                procs[name] = gateways.start_sparkplane(env)
            targets = {
                name: Target(name, proc.url, {"Authorization": f"Bearer {keys[name]}"})
                for name, proc in procs.items()
            }
            results, cpu = asyncio.run(alternate(targets, procs, args.rate, args.rounds))
        finally:
            for proc in reversed(procs.values()):
                proc.stop()
            stuck.close()
            live.close()
    print(
        f"\n# SIEM feed states at {args.rate:g} req/s, open loop ({args.rounds} rounds x 5 s "
        f"per target, alternating; 1-min load average before the run {load:.1f})"
    )
    print_added(results, cpu, list(feeds), "feed")


if __name__ == "__main__":
    main()
