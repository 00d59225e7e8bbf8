"""A real control plane (uvicorn on 127.0.0.1, temp SQLite) in front of the engine simulator."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.api.http_server import server_config
from controlplane.audit.models import AuditEntry
from controlplane.console.auth import create_admin
from controlplane.console.queries import entry_data
from controlplane.core.config import Settings
from controlplane.core.db import init_db, make_engine, session_factory
from controlplane.main import create_app
from tests.enginesim import SimHandle, start_simulator

PASSWORD = "console-test-password"
AuditRow = tuple[str, str | None, dict[str, Any]]  # kind, tenant, fields


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, what: str, timeout: float = 20) -> None:
    """Until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:g} s")


@contextmanager
def running_console(
    tmp_path_factory: pytest.TempPathFactory, port: int | None = None, **settings: Any
) -> Iterator[ConsoleServer]:
    """A console server on a fresh appliance layout, stopped on exit (for module fixtures)."""
    from tests.controlplane.console.appliance import lay_out_appliance

    layout = lay_out_appliance(tmp_path_factory.mktemp("appliance"))
    server = start_console_server(layout.controlplane_data, port=port, **settings)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ConsoleServer:
    url: str
    settings: Settings
    sim: SimHandle
    sessions: sessionmaker[Session]
    app: FastAPI
    _server: uvicorn.Server
    _thread: threading.Thread
    _counter: list[int] = field(default_factory=lambda: [0])

    @property
    def console(self) -> str:
        return f"{self.url}/console"

    def unique(self, stem: str) -> str:
        self._counter[0] += 1
        return f"{stem}{self._counter[0]}"

    def add_user(
        self, role: str, password: str | None = PASSWORD, stem: str = ""
    ) -> tuple[str, str]:
        """A new console user (unique name); returns (username, password)."""
        name = self.unique(stem or role)
        with self.sessions() as db:
            secret = create_admin(db, name, role, password)
            db.commit()
        return name, secret

    def audit_entries(
        self, kind: str | None = None
    ) -> list[tuple[str, str | None, dict[str, Any]]]:
        """(kind, tenant, fields) of every audit entry, oldest first."""
        with self.sessions() as db:
            query = select(AuditEntry).order_by(AuditEntry.seq)
            if kind:
                query = query.where(AuditEntry.kind == kind)
            return [(e.kind, e.tenant, entry_data(e)) for e in db.scalars(query)]

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self.sim.stop()


def start_console_server(
    data_dir: Path, tls: tuple[Path, Path] | None = None, port: int | None = None, **settings: Any
) -> ConsoleServer:
    """Start the server; `tls` = (certificate, key) PEM files serves it over HTTPS; `port`
    when its URL must be known before (an identity provider's redirect URI)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sim = start_simulator(max_num_seqs=4, time_scale=0.01, scheduling_policy="priority")
    port = port or free_port()
    config = Settings(
        data_dir=data_dir, engine_urls=[sim.url], engine_capacity=4, engine_queue=2,
        usage_flush_interval=0.2, engine_health_interval=0.5, **settings,
    )  # fmt: skip
    engine = make_engine(config.database_url)
    init_db(engine)
    app = create_app(config)
    ssl: dict[str, Any] = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
    server = uvicorn.Server(
        server_config(app, config, host="127.0.0.1", port=port, log_level="warning", **ssl)
    )
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/console/signin", timeout=2, verify=False).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if not thread.is_alive():
            raise RuntimeError("the control plane exited during start-up")
        time.sleep(0.1)
    else:
        server.should_exit = True
        sim.stop()
        raise RuntimeError("the control plane did not answer within 30 s")
    return ConsoleServer(url, config, sim, session_factory(engine), app, server, thread)
