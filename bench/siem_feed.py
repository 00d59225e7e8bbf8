"""The gateway's latency with the SIEM feed off, its receiver dead, stuck, or reading.

    .venv/bin/python -m bench.siem_feed [--rate 200] [--rounds 4]

Four `sparkplane serve` processes of this tree, one upstream, served side by side and
alternating every 5 s (as `gateway_ab.py` does), each with its own SQLite data dir:

- off:   no SPARKPLANE_SIEM_TARGET;
- dead:  tcp:// to a port where nothing listens (connection refused, reconnect backoff);
- stuck: tcp:// to a receiver that accepts and never reads (sends block until they time out);
- live:  tcp:// to a receiver that reads and discards (the feed's cost when it delivers).

The receivers run as threads of this process; they do no work while the load runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from bench import gateways
from bench.gateway_ab import alternate, print_added
from bench.loadgen import Target
from tests.controlplane.audit.receivers import TcpReceiver


def main() -> None:
    parser = argparse.ArgumentParser(description="gateway latency against the SIEM feed's state")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--rounds", type=int, default=4, help="5 s per target and round")
    args = parser.parse_args()
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
