"""Issue 17, finding 5: made-up keys must not grow the audit log fast. 10,000 bad-key requests
from one address add at most 100 audit entries (repeats within a window are one entry with a
count, the first and last time and the key prefixes seen: nothing lost), the address is
answered 429 with Retry-After once past its allowance, and a legitimate request's latency
stays within 2x of idle while the flood runs at about 500 requests a second (the probe sent
400 a second; the flooder is paced so that the 2-core machine measures the gateway, not the
flooder's own CPU). Failed before the fix (10,000 entries)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.controlplane.console.server import AuditRow, ConsoleServer
from tests.controlplane.harness import ADMIN_TOKEN, ProcessGateway, free_port
from tests.enginesim import SimHandle, start_simulator
from tests.security.conftest import new_address

FLOOD = 10_000
WINDOW = 3.0
CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

FLOODER = textwrap.dedent("""
    import asyncio, sys, httpx
    url, address, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    async def main():
        transport = httpx.AsyncHTTPTransport(local_address=address)
        async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as client:
            statuses = {}
            async def worker(start):
                for n in range(start, total, 4):
                    key = f"sk-sp-madeup{n:06d}-" + "x" * 24
                    response = await client.post("/v1/chat/completions", json={},
                                                 headers={"Authorization": f"Bearer {key}"})
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code == 429:
                        assert int(response.headers["retry-after"]) >= 1
                    await asyncio.sleep(0.008)  # 4 streams: about 500 a second, the probe's pace
            await asyncio.gather(*(worker(start) for start in range(4)))
            print(statuses)
    asyncio.run(main())
""")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator(max_num_seqs=16, time_scale=0.01)
    yield handle
    handle.stop()


@pytest.fixture
def gateway(sim: SimHandle, tmp_path: Path) -> Iterator[tuple[ProcessGateway, str]]:
    port = free_port()
    env = {"SPARKPLANE_DATA_DIR": str(tmp_path / "data"), "SPARKPLANE_ENGINE_URLS": sim.url,
           "SPARKPLANE_ADMIN_TOKEN": ADMIN_TOKEN,
           "SPARKPLANE_AUTH_FAILURE_WINDOW": str(WINDOW)}  # fmt: skip
    running = ProcessGateway(env, port, tmp_path / "gateway.log")
    admin = httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert admin.post("/api/tenants", json={"name": "legit"}).status_code == 201
    key = admin.post("/api/keys", json={"tenant": "legit"}).json()["key"]
    admin.close()
    yield running, key
    running.stop()


def _latencies(url: str, key: str, count: int) -> list[float]:
    transport = httpx.HTTPTransport(local_address=new_address())
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, transport=transport, headers=headers, timeout=30) as client:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
            times.append(time.perf_counter() - started)
            time.sleep(0.02)
        return times


def _audit_rows(data_dir: Path) -> list[AuditRow]:
    from sqlalchemy import select

    from controlplane.audit.models import AuditEntry
    from controlplane.console.queries import entry_data
    from controlplane.core.db import make_engine, session_factory

    engine = make_engine(f"sqlite:///{data_dir / 'sparkplane.db'}")
    try:
        with session_factory(engine)() as db:
            query = select(AuditEntry).order_by(AuditEntry.seq)
            return [(e.kind, e.tenant, entry_data(e)) for e in db.scalars(query)]
    finally:
        engine.dispose()


def test_a_flood_of_made_up_keys_is_limited_and_summarised(
    gateway: tuple[ProcessGateway, str], tmp_path: Path
) -> None:
    running, key = gateway
    _latencies(running.url, key, 10)  # warm up
    idle = statistics.median(_latencies(running.url, key, 30))
    before = len(_audit_rows(tmp_path / "data"))

    flooder_address = new_address()
    flooder = subprocess.Popen(
        [sys.executable, "-c", FLOODER, running.url, flooder_address, str(FLOOD)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.5)
    during = _latencies(running.url, key, 30)
    output, _ = flooder.communicate(timeout=300)
    assert flooder.returncode == 0, output
    statuses = eval(output)  # {status: count}, printed by the flooder
    assert statuses.get(429, 0) > FLOOD * 0.9, statuses
    assert statistics.median(during) <= 2 * idle, (idle, during)

    time.sleep(WINDOW + 1)  # the last window closes and is written
    running.stop()  # anything still open is flushed at shutdown
    rows = _audit_rows(tmp_path / "data")[before:]
    refusals = [row for row in rows if row[0] in ("api.auth_failed", "api.auth_failed_repeated")]
    assert len(refusals) <= 100, len(refusals)
    counted = sum(int(fields.get("count", 1)) for _, _, fields in refusals
                  if fields.get("client") == flooder_address)  # fmt: skip
    assert counted == FLOOD, "every refused request is accounted for"
    summaries = [fields for kind, _, fields in refusals if kind == "api.auth_failed_repeated"]
    assert summaries, "no summary entry"
    first = summaries[0]
    assert first["first_at"] <= first["last_at"]
    assert first["key_prefixes"] and all(p.startswith("sk-sp-") for p in first["key_prefixes"])


def test_the_allowance_is_shared_by_replicas(replicas: list[ConsoleServer]) -> None:
    """Two replicas on one database (SQLite file, PostgreSQL): failures on either count."""
    address = new_address()
    clients = [httpx.Client(base_url=r.url, transport=httpx.HTTPTransport(local_address=address))
               for r in replicas]  # fmt: skip
    bad = {"Authorization": "Bearer sk-sp-madeup-shared-" + "y" * 20}
    try:
        statuses = [clients[n % 2].get("/v1/models", headers=bad).status_code for n in range(24)]
    finally:
        for client in clients:
            client.close()
    assert statuses[:20] == [401] * 20, statuses  # the default allowance, counted across both
    assert statuses[20:] == [429] * 4, statuses
