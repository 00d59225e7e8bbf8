"""kill -9 of a real `sparkplane serve` under load: every call a client saw succeed has its
audit entries, and the chain verifies, also after a restart (issue 6, "Durability")."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import select

from controlplane.audit.models import AuditEntry
from controlplane.audit.verify import verify_live
from controlplane.core.db import make_engine
from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ADMIN_TOKEN, ProcessGateway, free_port

CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


async def call(client: httpx.AsyncClient, stream: bool) -> str | None:
    """The request id of a call that visibly succeeded, else None."""
    try:
        if not stream:
            response = await client.post("/v1/chat/completions", json=CHAT)
            ok = response.status_code == 200 and response.json()["choices"]
            return response.headers["x-request-id"] if ok else None
        async with client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}
        ) as r:
            body = b"".join([chunk async for chunk in r.aiter_bytes()])
            return r.headers["x-request-id"] if r.status_code == 200 and b"[DONE]" in body else None
    except httpx.HTTPError:
        return None


async def load(url: str, key: str, seconds: float, kill) -> list[str]:
    succeeded: list[str] = []
    stop_at = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}

    async def client_loop(index: int) -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            while time.monotonic() < stop_at:
                request_id = await call(client, stream=index % 2 == 1)
                if request_id:
                    succeeded.append(request_id)
                else:
                    await asyncio.sleep(0.02)

    async def killer() -> None:
        await asyncio.sleep(seconds / 2)
        kill()

    await asyncio.gather(killer(), *(client_loop(i) for i in range(16)))
    return succeeded


def audited_request_ids(database: Path) -> dict[str, set[str]]:
    engine = make_engine(f"sqlite:///{database}")
    seen: dict[str, set[str]] = {"api.request": set(), "api.completion": set()}
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditEntry.kind, AuditEntry.data).where(AuditEntry.kind.in_(seen))
        )
        for kind, data in rows:
            seen[kind].add(orjson.loads(data)["request_id"])
    engine.dispose()
    return seen


@pytest.fixture(scope="module")
def killed_under_load(sim, tmp_path_factory):
    """Serve 16 clients (plain and streamed), kill -9 the server half-way, restart it, serve
    again, stop it cleanly. Yields (request ids that visibly succeeded before the kill, the set
    of audited request ids per kind, the verify reports after the kill and after the restart)."""
    tmp_path = tmp_path_factory.mktemp("kill9")
    data_dir = tmp_path / "data"
    env = {"SPARKPLANE_DATA_DIR": str(data_dir), "SPARKPLANE_ENGINE_URLS": sim.url,
           "SPARKPLANE_ADMIN_TOKEN": ADMIN_TOKEN}  # fmt: skip
    gateway = ProcessGateway(env, free_port(), tmp_path / "serve.log")
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                      timeout=30) as admin:  # fmt: skip
        key = new_tenant(admin, "load")

    def kill() -> None:
        os.kill(gateway.proc.pid, signal.SIGKILL)

    succeeded = asyncio.run(load(gateway.url, key, 3.0, kill))
    gateway.stop()
    assert gateway.proc.returncode == -signal.SIGKILL and len(succeeded) > 20
    seen = audited_request_ids(data_dir / "sparkplane.db")
    engine = make_engine(f"sqlite:///{data_dir / 'sparkplane.db'}")
    pub = data_dir / "audit-signing.pub"
    after_kill = verify_live(engine, [pub])
    restarted = ProcessGateway(env, free_port(), tmp_path / "serve2.log")
    served_again = asyncio.run(load(restarted.url, key, 1.0, lambda: None))
    restarted.stop()  # a clean stop signs a final checkpoint
    assert served_again
    after_restart = verify_live(engine, [pub])
    engine.dispose()
    return succeeded, seen, after_kill, after_restart


@pytest.mark.slow
def test_every_acknowledged_call_has_its_request_entry(killed_under_load):
    succeeded, seen, _, _ = killed_under_load
    assert set(succeeded) <= seen["api.request"]


@pytest.mark.slow
def test_chain_verifies_after_kill_9_and_after_restart(killed_under_load):
    _, _, after_kill, after_restart = killed_under_load
    assert after_kill.valid, after_kill.as_dict()
    assert after_restart.valid and after_restart.uncovered == 0, after_restart.as_dict()


@pytest.mark.slow
def test_every_acknowledged_call_has_its_completion_entry(killed_under_load):
    succeeded, seen, _, _ = killed_under_load
    missing = set(succeeded) - seen["api.completion"]
    assert not missing, f"{len(missing)} of {len(succeeded)} acknowledged calls lack api.completion"
