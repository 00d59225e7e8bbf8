"""Real servers for control-plane tests: the gateway under uvicorn on 127.0.0.1, in a thread
(to look at its live admission state) or in its own process (replicas, CLI)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import uvloop
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from controlplane.api.http_server import server_config
from controlplane.core.config import Settings
from controlplane.main import create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
METRICS_TOKEN = "test-metrics-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metrics_token_file(directory: Path) -> Path:
    """A scrape token file (0600) with METRICS_TOKEN, for SPARKPLANE_METRICS_TOKEN_FILE."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "metrics-token"
    path.write_text(METRICS_TOKEN + "\n")
    path.chmod(0o600)
    return path


def scrape(url: str) -> str:
    """The gateway's /metrics text, read with the scrape token."""
    response = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.text


def make_settings(data_dir: Path, engine_urls: list[str], **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "metrics_token_file": metrics_token_file(data_dir),
        # Load tests put hundreds of clients on 127.0.0.1, one address.
        "max_connections_per_address": 2048,
        "data_dir": data_dir,
        "engine_urls": engine_urls,
        "admin_token": ADMIN_TOKEN,
        "engine_health_interval": 0.2,
        "port": free_port(),
    }
    values.update(extra)
    return Settings(**values)


class ThreadGateway:
    """`create_app(settings)` served by uvicorn (uvloop + httptools) in a daemon thread; with
    `fast_path=False` as a plain FastAPI app (the relayed routes then go through FastAPI's
    routing instead of `ControlPlaneApp`'s fast path)."""

    def __init__(self, settings: Settings, *, fast_path: bool = True) -> None:
        self.settings = settings
        self.app = create_app(settings)
        app = self.app

        async def through_fastapi(scope: Scope, receive: Receive, send: Send) -> None:
            await FastAPI.__call__(app, scope, receive, send)

        config = server_config(self.app, settings, host="127.0.0.1", log_level="warning")
        if not fast_path:
            config.app = through_fastapi
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{settings.port}"
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self.thread.start()
        wait_until_up(self.url, self.thread)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        finally:
            self.loop.close()

    def call_in_loop(self, func: Any, *args: Any) -> Any:
        """Run `func(*args)` on the gateway's loop thread (where its state lives)."""

        async def run() -> Any:
            return func(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        )

    def state(self) -> Any:
        return self.app.state.gateway


def wait_until_up(url: str, thread_or_proc: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = (
            thread_or_proc.is_alive()
            if isinstance(thread_or_proc, threading.Thread)
            else thread_or_proc.poll() is None
        )
        if not alive:
            raise RuntimeError(f"gateway at {url} died while starting")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"gateway at {url} did not come up in {timeout} s")


class ProcessGateway:
    """`sparkplane serve` in its own process, configured through SPARKPLANE_* variables."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log_path.open("ab")
        full_env = {**os.environ, **env, "SPARKPLANE_PORT": str(port)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from installer.cli.main import main; main()", "serve"],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_up(self.url, self.proc)
        except RuntimeError:
            self.stop()
            raise RuntimeError(log_path.read_text()[-3000:]) from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
