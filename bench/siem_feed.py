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
import socket
import tempfile
import threading
from pathlib import Path

from bench import gateways
from bench.gateway_ab import alternate
from bench.loadgen import Target, percentile


class Receiver:
    """A TCP listener on 127.0.0.1 that reads and discards (or, `stuck`, never reads)."""

    def __init__(self, *, stuck: bool) -> None:
        self.stuck = stuck
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if not self.stuck:
                threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        while True:
            try:
                if not conn.recv(1 << 16):
                    return
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="gateway latency against the SIEM feed's state")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--rounds", type=int, default=4, help="5 s per target and round")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    stuck, live = Receiver(stuck=True), Receiver(stuck=False)
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
    base = results["direct"].latencies
    b50, b99 = percentile(base, 50), percentile(base, 99)
    print(
        f"\n# SIEM feed states at {args.rate:g} req/s, open loop ({args.rounds} rounds x 5 s "
        f"per target, alternating; 1-min load average before the run {load:.1f})\n"
        f"direct: p50 {b50 * 1000:.2f} ms, p99 {b99 * 1000:.2f} ms\n"
    )
    print("feed      ok  err   +p50 ms  +p99 ms  CPU ms/req")
    for name in feeds:
        r = results[name]
        added50 = (percentile(r.latencies, 50) - b50) * 1000
        added99 = (percentile(r.latencies, 99) - b99) * 1000
        per_request = cpu[name] / max(r.ok, 1) * 1000
        line = f"{name:<7} {r.ok:5d} {r.failed:4d}  {added50:8.2f} {added99:8.2f}"
        print(f"{line}  {per_request:10.2f}")


if __name__ == "__main__":
    main()
