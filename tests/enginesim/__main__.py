"""`python -m tests.enginesim --port 8000 [--max-num-seqs 32] [--time-scale 0.01] ...`

Prints `ENGINESIM_READY port=N` on stdout once it listens; stops on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any

from . import READY_PREFIX, new_event_loop
from .model import SimOptions
from .server import SimServer


def parse_args(argv: list[str] | None) -> tuple[SimOptions, bool]:
    p = argparse.ArgumentParser(
        prog="python -m tests.enginesim", description="vLLM-compatible engine simulator"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument(
        "--served-model-name",
        dest="models",
        default="sim-model",
        help="comma-separated model names",
    )
    p.add_argument("--max-num-seqs", type=int, default=32)
    p.add_argument(
        "--scheduling-policy",
        choices=("fcfs", "priority"),
        default="fcfs",
        help="order of the waiting queue, as vLLM's flag",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiplies every modelled duration (0.01 = 100x faster)",
    )
    p.add_argument("--prefill-tps", type=float, default=2100.0)
    p.add_argument("--decode-tps-single", type=float, default=32.0)
    p.add_argument("--decode-tps-at-16", type=float, default=18.0)
    p.add_argument("--default-max-tokens", type=int, default=64)
    p.add_argument(
        "--output-tokens",
        type=int,
        default=None,
        help="natural answer length (finish_reason stop); default: max_tokens",
    )
    p.add_argument("--max-model-len", type=int, default=32768)
    p.add_argument(
        "--reasoning-tokens", type=int, default=0, help="chat answers start with N reasoning tokens"
    )
    p.add_argument("--no-embeddings", dest="embeddings", action="store_false")
    p.add_argument(
        "--startup-delay",
        dest="startup_delay_s",
        type=float,
        default=0.0,
        help="refuse connections for this many seconds after start",
    )
    p.add_argument(
        "--keepalive",
        dest="keepalive_s",
        type=float,
        default=5.0,
        help="seconds an idle keep-alive connection stays open (vLLM: 5)",
    )
    p.add_argument(
        "--faults", default="{}", help="initial faults as JSON, e.g. '{\"error_rate\": 0.1}'"
    )
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when stdin reaches EOF (start_simulator passes a pipe: no orphans)",
    )
    p.add_argument(
        "--config-json",
        default=None,
        help="all options as one JSON object (used by start_simulator)",
    )
    args = p.parse_args(argv)
    try:
        if args.config_json is not None:
            return SimOptions.from_kwargs(**json.loads(args.config_json)), args.exit_with_parent
        values: dict[str, Any] = vars(args)
        values.pop("config_json")
        exit_with_parent = values.pop("exit_with_parent")
        values["faults"] = json.loads(values["faults"])
        return SimOptions.from_kwargs(**values), exit_with_parent
    except (ValueError, TypeError) as exc:
        p.error(str(exc))
        raise  # unreachable: p.error exits


async def serve(opts: SimOptions, exit_with_parent: bool) -> None:
    server = SimServer(opts)
    port = await server.start()
    print(f"{READY_PREFIX}{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_with_parent:  # stdin is a pipe from the parent: EOF means the parent is gone
        stdin = sys.stdin.fileno()

        def on_stdin() -> None:
            if not os.read(stdin, 4096):
                loop.remove_reader(stdin)
                stop.set()

        loop.add_reader(stdin, on_stdin)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    opts, exit_with_parent = parse_args(argv)
    loop = new_event_loop()
    try:
        loop.run_until_complete(serve(opts, exit_with_parent))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
