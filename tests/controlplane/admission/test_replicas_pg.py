"""Two `sparkplane serve` replicas on the real PostgreSQL: caps, rates, revocation, crashes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import psycopg
import pytest

from controlplane.core.config import load_settings
from controlplane.tenancy import actions
from tests.controlplane.harness import ProcessGateway, free_port
from tests.enginesim import SimHandle, start_simulator

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
CAPACITY = 16


def postgres_reachable() -> bool:
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    schema = f"sp_test_{os.getpid()}_{secrets.token_hex(4)}"  # one schema per test run
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{ADMIN_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator(mode="subprocess", max_num_seqs=CAPACITY, time_scale=0.2)
    yield handle
    handle.stop()


class Cluster:
    def __init__(self, database_url: str, sim: SimHandle, data_dir: Path) -> None:
        # Replicas share the database and the key pepper (here: the same data directory).
        self.env = {
            "SPARKPLANE_DATABASE_URL": database_url,
            "SPARKPLANE_DATA_DIR": str(data_dir),
            "SPARKPLANE_ENGINE_URLS": sim.url,
            "SPARKPLANE_ENGINE_CAPACITY": str(CAPACITY),
            "SPARKPLANE_LEASE_TTL": "3",
        }
        self.data_dir = data_dir
        self.replicas = [self.start() for _ in range(2)]

    def start(self) -> ProcessGateway:
        index = len(getattr(self, "replicas", []))
        return ProcessGateway(self.env, free_port(), self.data_dir / f"replica-{index}.log")

    def settings(self):  # type: ignore[no-untyped-def]
        return load_settings(
            None, database_url=self.env["SPARKPLANE_DATABASE_URL"], data_dir=self.data_dir
        )

    def tenant(self, name: str, **limits: object) -> str:
        actions.create_tenant(self.settings(), name, **limits)
        return actions.create_key(self.settings(), name)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()


@pytest.fixture(scope="module")
def cluster(database_url: str, sim: SimHandle, tmp_path_factory: pytest.TempPathFactory):
    nodes = Cluster(database_url, sim, tmp_path_factory.mktemp("replicas"))
    yield nodes
    nodes.stop()


def lease_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM admission_leases").fetchone()
        return int(row[0]) if row else -1


def chat(max_tokens: int = 4, stream: bool = False) -> dict[str, object]:
    return {
        "model": "sim-model",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def test_caps_hold_across_two_replicas_under_500_clients(cluster: Cluster, sim: SimHandle):
    keys = {
        name: await asyncio.to_thread(
            cluster.tenant, name, max_concurrency=5, queue_size=1000, queue_timeout=120
        )
        for name in ("pg-a", "pg-b")
    }
    sim.reset()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(index: int) -> int:
            name = list(keys)[index % 2]
            url = cluster.replicas[(index // 2) % 2].url + "/v1/chat/completions"
            headers = {"Authorization": f"Bearer {keys[name]}"}
            async with session.post(url, json=chat(), headers=headers) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one(i) for i in range(500)))
    assert statuses.count(200) == 500, sorted(set(statuses))
    stats = sim.stats()
    assert stats["max_in_flight"] <= CAPACITY
    for name in keys:
        # Each replica alone would allow 5: more than 5 at the engine means the cap leaked.
        assert stats["tenants"][name]["max_in_flight"] == 5, stats["tenants"][name]
    assert lease_count(cluster.env["SPARKPLANE_DATABASE_URL"]) == 0


def test_revocation_on_one_replica_is_seen_by_the_other(cluster: Cluster) -> None:
    key = cluster.tenant("pg-revoke")
    headers = {"Authorization": f"Bearer {key}"}
    first, second = cluster.replicas
    assert httpx.get(second.url + "/v1/models", headers=headers).status_code == 200  # cached
    keys = actions.list_keys(cluster.settings(), "pg-revoke")
    actions.revoke_key(cluster.settings(), keys[0].id)
    response = httpx.get(second.url + "/v1/models", headers=headers)
    assert response.status_code == 401 and response.json()["error"]["code"] == "revoked_api_key"
    assert httpx.get(first.url + "/v1/models", headers=headers).status_code == 401


def test_rpm_is_shared_by_the_replicas(cluster: Cluster) -> None:
    key = cluster.tenant("pg-rpm", rpm=4)
    headers = {"Authorization": f"Bearer {key}"}
    statuses = [
        httpx.post(
            replica.url + "/v1/chat/completions", json=chat(1), headers=headers, timeout=30
        ).status_code
        for _ in range(3)
        for replica in cluster.replicas
    ]
    assert sorted(statuses) == [200] * 4 + [429] * 2, statuses


async def test_disconnects_across_replicas_leave_no_lease(cluster: Cluster, sim: SimHandle):
    key = await asyncio.to_thread(
        cluster.tenant, "pg-leak", max_concurrency=6, queue_size=1000, queue_timeout=60
    )
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {key}"}

    async def one(session: aiohttp.ClientSession, index: int) -> None:
        url = cluster.replicas[index % 2].url + "/v1/chat/completions"

        async def run() -> None:
            async with session.post(url, json=chat(30, index % 3 == 0), headers=headers) as r:
                async for _ in r.content.iter_any():
                    pass

        with contextlib.suppress(TimeoutError):  # cut at a random point
            await asyncio.wait_for(run(), rng.uniform(0, 0.8))

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for batch in range(8):
            await asyncio.gather(*(one(session, batch * 50 + i) for i in range(50)))
    deadline = time.monotonic() + 10
    while lease_count(cluster.env["SPARKPLANE_DATABASE_URL"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert lease_count(cluster.env["SPARKPLANE_DATABASE_URL"]) == 0
    assert sim.wait_idle()["in_flight"] == 0


def test_a_crashed_replicas_slots_expire(cluster: Cluster) -> None:
    key = cluster.tenant("pg-crash", max_concurrency=1, queue_timeout=0.5)
    headers = {"Authorization": f"Bearer {key}"}
    doomed = cluster.start()
    try:
        import threading

        def long_request() -> None:
            with contextlib.suppress(httpx.TransportError):  # its replica is killed under it
                httpx.post(
                    doomed.url + "/v1/chat/completions", json=chat(400), headers=headers, timeout=30
                )

        hold = threading.Thread(target=long_request)
        hold.start()
        deadline = time.monotonic() + 10
        while lease_count(cluster.env["SPARKPLANE_DATABASE_URL"]) == 0:
            assert time.monotonic() < deadline, "the long request never got a lease"
            time.sleep(0.05)
        survivor = cluster.replicas[0].url + "/v1/chat/completions"
        busy = httpx.post(survivor, json=chat(1), headers=headers, timeout=30)
        assert busy.status_code == 429  # the cap is held by the other replica
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait()
        hold.join()
        time.sleep(3.5)  # the lease TTL
        assert httpx.post(survivor, json=chat(1), headers=headers, timeout=30).status_code == 200
    finally:
        doomed.stop()


def test_tpm_debt_on_one_replica_holds_back_the_other(cluster: Cluster) -> None:
    key = cluster.tenant("pg-tpm", tpm=20)
    headers = {"Authorization": f"Bearer {key}"}
    first, second = cluster.replicas
    ok = httpx.post(first.url + "/v1/chat/completions", json=chat(30), headers=headers, timeout=30)
    assert ok.status_code == 200  # admitted with a full bucket, then charged 30+ tokens
    deadline = time.monotonic() + 5
    while True:  # the charge is written in the background just after the answer
        refused = httpx.post(
            second.url + "/v1/chat/completions", json=chat(1), headers=headers, timeout=30
        )
        if refused.status_code == 429 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "tpm_limit"
    assert int(refused.headers["retry-after"]) >= 1
