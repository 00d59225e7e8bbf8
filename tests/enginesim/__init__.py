"""A vLLM-compatible engine simulator for tests and benchmarks (never imported by controlplane).

    from tests.enginesim import start_simulator
    sim = start_simulator(max_num_seqs=4, time_scale=0.01)      # background thread
    sim = start_simulator(mode="subprocess", max_num_seqs=32)     # its own process (heavy load)
    client = openai.OpenAI(base_url=sim.url, api_key="x")
    sim.stats(); sim.set_faults(fail_next=2); sim.reset(); sim.stop()

Options: see `SimOptions` in model.py; faults: see `Faults` in faults.py.
"""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .model import SimOptions
from .server import SimServer

__all__ = ["REPO_ROOT", "SimHandle", "SimOptions", "SimServer", "start_simulator"]

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_PREFIX = "ENGINESIM_READY port="


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the venv
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class SimHandle:
    """A running simulator: `.url` (OpenAI base URL, ends in /v1), `.base_url`, `.port`."""

    def __init__(self, host: str, port: int) -> None:
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self.url = self.base_url + "/v1"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        """GET /sim/stats (in_flight, running, waiting, max_*, aborted, tenants, ...)."""
        return dict(self._call("GET", "/sim/stats"))

    def reset(self) -> dict[str, Any]:
        """Zero counters and peaks; returns the fresh stats."""
        return dict(self._call("POST", "/sim/reset", {}))

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Change failure injection, e.g. `set_faults(fail_next=3, error_status=503)`."""
        return dict(self._call("POST", "/sim/faults", faults))

    def wait_idle(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until nothing is in flight (e.g. after clients went away); returns stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["in_flight"] == 0 or time.monotonic() > deadline:
                return stats
            time.sleep(0.02)

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ThreadSimHandle(SimHandle):
    """Simulator on its own event loop in a daemon thread of this process."""

    def __init__(self, opts: SimOptions, timeout: float) -> None:
        self.loop = new_event_loop()
        self.server = SimServer(opts)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.server.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()
            self.loop.close()

        self.thread = threading.Thread(target=run, name="enginesim", daemon=True)
        self.thread.start()
        if not ready.wait(timeout) or failure:
            raise RuntimeError(f"engine simulator did not start: {failure or 'timeout'}")
        super().__init__(opts.host, self.server.port)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)
        future.result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class ProcessSimHandle(SimHandle):
    """Simulator in a child `python -m tests.enginesim` process (its own GIL and core)."""

    def __init__(self, opts: SimOptions, timeout: float) -> None:
        config = json.dumps({**asdict(opts), "models": list(opts.models)})
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.enginesim",
                "--exit-with-parent",
                "--config-json",
                config,
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,  # closed when this process dies, however it dies
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = ""
        deadline = time.monotonic() + timeout
        while not line.startswith(READY_PREFIX):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"engine simulator did not start (exit {self.proc.poll()})")
            if select.select([self.proc.stdout], [], [], left)[0]:
                line = self.proc.stdout.readline()
        super().__init__(opts.host, int(line.removeprefix(READY_PREFIX).strip()))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def start_simulator(
    port: int = 0, mode: str = "thread", timeout: float = 30.0, **opts: Any
) -> SimHandle:
    """Start a simulator on 127.0.0.1 (`port=0` picks a free port) and wait until it listens.

    `mode` is "thread" (default, cheap) or "subprocess" (for load tests and benchmarks).
    """
    options = SimOptions.from_kwargs(port=port, **opts)
    if mode == "thread":
        return ThreadSimHandle(options, timeout)
    if mode == "subprocess":
        return ProcessSimHandle(options, timeout)
    raise ValueError(f"mode must be 'thread' or 'subprocess', got {mode!r}")
