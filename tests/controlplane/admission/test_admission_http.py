"""Admission through real HTTP: caps under load, 1,000 random disconnects, 429s, engine faults."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle, start_simulator

ENGINE_CAPACITY = 16


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    # time_scale 0.2: a 20-token answer takes about 0.15-0.2 s, long enough to cut anywhere.
    handle = start_simulator(max_num_seqs=ENGINE_CAPACITY, time_scale=0.2)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def gateway(sim: SimHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadGateway]:
    settings = make_settings(
        tmp_path_factory.mktemp("gw"), [sim.url], engine_capacity=ENGINE_CAPACITY
    )
    server = ThreadGateway(settings)
    yield server
    server.stop()


def live_counts(gateway: ThreadGateway) -> dict[str, tuple[int, int]]:
    def read() -> dict[str, tuple[int, int]]:
        states = gateway.state().admission.tenants.values()
        return {s.policy.name: (s.in_flight, len(s.queue)) for s in states}

    return dict(gateway.call_in_loop(read))


def wait_for_idle(gateway: ThreadGateway, sim: SimHandle, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engines = gateway.call_in_loop(
            lambda: [e.in_flight for e in gateway.state().engines.engines]
        )
        busy = any(v != (0, 0) for v in live_counts(gateway).values()) or any(engines)
        if not busy and sim.stats()["in_flight"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"not idle: {live_counts(gateway)}, engine {sim.stats()['in_flight']}")


def chat(model: str = "sim-model", max_tokens: int = 20, stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def test_caps_hold_under_500_concurrent_clients(gateway: ThreadGateway, sim: SimHandle):
    with gateway.admin() as admin:
        keys = {
            name: new_tenant(admin, name, max_concurrency=5, queue_size=1000, queue_timeout=120)
            for name in ("cap-a", "cap-b", "cap-c")
        }
    sim.reset()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(gateway.url, connector=connector) as session:

        async def one(index: int) -> int:
            name = list(keys)[index % 3]
            headers = {"Authorization": f"Bearer {keys[name]}"}
            async with session.post(
                "/v1/chat/completions", json=chat(max_tokens=4), headers=headers
            ) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one(i) for i in range(500)))
    assert statuses.count(200) == 500, sorted(set(statuses))
    stats = sim.stats()
    assert stats["max_in_flight"] <= ENGINE_CAPACITY
    for name in keys:
        assert 1 <= stats["tenants"][name]["max_in_flight"] <= 5, stats["tenants"][name]
    wait_for_idle(gateway, sim)


async def test_a_thousand_random_disconnects_leak_nothing(gateway: ThreadGateway, sim: SimHandle):
    cap = 8
    with gateway.admin() as admin:
        keys = [
            new_tenant(admin, f"leak-{i}", max_concurrency=cap, queue_size=1000, queue_timeout=60)
            for i in range(3)
        ]
    sim.reset()
    rng = random.Random(1234)
    outcomes: dict[str, int] = {"completed": 0, "cut": 0, "cut_mid_stream": 0}

    async def one(session: aiohttp.ClientSession, index: int) -> None:
        stream = index % 2 == 0
        headers = {"Authorization": f"Bearer {keys[index % 3]}"}
        cut_after = rng.uniform(0.0, 1.2)  # queued, before the first token, mid-answer, or never

        got_bytes = False

        async def run() -> None:
            nonlocal got_bytes
            body = chat(stream=stream, max_tokens=40)
            async with session.post("/v1/chat/completions", json=body, headers=headers) as response:
                async for _ in response.content.iter_any():
                    got_bytes = True

        try:
            await asyncio.wait_for(run(), cut_after)
            outcomes["completed"] += 1
        except TimeoutError:
            outcomes["cut"] += 1
            outcomes["cut_mid_stream"] += got_bytes

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(gateway.url, connector=connector) as session:
        for batch in range(20):
            await asyncio.gather(*(one(session, batch * 50 + i) for i in range(50)))
    assert outcomes["cut"] > 300 and outcomes["completed"] > 20, outcomes
    assert outcomes["cut_mid_stream"] > 20, outcomes  # some were cut after their first token
    wait_for_idle(gateway, sim)
    assert sim.stats()["aborted"] > 100, (
        outcomes,
        {k: v for k, v in sim.stats().items() if k != "tenants"},
    )

    # A full cap of new requests is admitted at once, with nothing queued.
    sim.reset()
    headers = {"Authorization": f"Bearer {keys[0]}"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        requests = [
            asyncio.create_task(
                client.post("/v1/chat/completions", headers=headers, json=chat(max_tokens=150))
            )
            for _ in range(cap)
        ]
        deadline = time.monotonic() + 10
        while live_counts(gateway)["leak-0"] != (cap, 0):  # all in flight, none ever queued
            assert live_counts(gateway)["leak-0"][1] == 0, "a request had to queue"
            assert time.monotonic() < deadline, live_counts(gateway)
            await asyncio.sleep(0.02)
        responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [200] * cap
    assert sim.stats()["tenants"]["leak-0"]["max_in_flight"] == cap


def test_queue_timeout_gives_429_with_retry_after(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "impatient", max_concurrency=1, queue_size=5, queue_timeout=0.2)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=gateway.url, timeout=30, headers=headers) as client:
        import threading

        slow = threading.Thread(
            target=client.post, args=("/v1/chat/completions",), kwargs={"json": chat(max_tokens=60)}
        )
        slow.start()
        time.sleep(0.1)
        response = client.post("/v1/chat/completions", json=chat())
        slow.join()
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "tenant_concurrency_limit" and error["type"] == "rate_limit_error"
    assert "concurrency limit of 1" in error["message"]


def test_rpm_limit_gives_429(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "chatty", rpm=2)
    headers = {"Authorization": f"Bearer {key}"}
    statuses = [
        httpx.post(
            gateway.url + "/v1/chat/completions", json=chat(max_tokens=1), headers=headers
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_engine_errors_pass_through_with_their_status(gateway: ThreadGateway, sim: SimHandle):
    with gateway.admin() as admin:
        key = new_tenant(admin, "unlucky")
    sim.set_faults(fail_next=1, error_status=500)
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=chat(),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 500
    assert "error" in response.json()


def test_tpm_is_charged_with_real_usage(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "wordy", tpm=20)
    headers = {"Authorization": f"Bearer {key}"}
    url = gateway.url + "/v1/chat/completions"
    assert httpx.post(url, json=chat(max_tokens=30), headers=headers).status_code == 200
    refused = httpx.post(url, json=chat(max_tokens=1), headers=headers)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "tpm_limit"


def test_daily_quota_and_usage_endpoint(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "quota-co", daily_tokens=25)
        headers = {"Authorization": f"Bearer {key}"}
        url = gateway.url + "/v1/chat/completions"
        assert httpx.post(url, json=chat(max_tokens=20), headers=headers).status_code == 200
        refused = httpx.post(url, json=chat(max_tokens=1), headers=headers)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "daily_token_quota"
        time.sleep(1.5)  # one usage flush
        usage = admin.get("/api/tenants/quota-co/usage").json()
        assert usage[-1]["requests"] == 1 and usage[-1]["completion_tokens"] == 20
        keys = admin.get("/api/keys", params={"tenant": "quota-co"}).json()
        assert keys[0]["last_used_at"] is not None
