"""Several engines (least-in-flight, health checks), metrics, readiness and offline docs."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ThreadGateway, make_settings, scrape
from tests.enginesim import SimHandle, start_simulator


@pytest.fixture(scope="module")
def sims() -> Iterator[list[SimHandle]]:
    handles = [start_simulator(max_num_seqs=4, time_scale=0.2) for _ in range(2)]
    yield handles
    for handle in handles:
        handle.stop()


@pytest.fixture(scope="module")
def pair(
    sims: list[SimHandle], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadGateway]:
    settings = make_settings(
        tmp_path_factory.mktemp("pair"), [s.url for s in sims], engine_capacity=4
    )
    server = ThreadGateway(settings)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def key(pair: ThreadGateway) -> str:
    with pair.admin() as admin:
        return new_tenant(admin, "spread", max_concurrency=50, queue_timeout=60)


def chat(key: str, url: str, max_tokens: int) -> int:
    body = {
        "model": "sim-model",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": max_tokens,
    }
    response = httpx.post(
        url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    return response.status_code


def engines(pair) -> list[dict[str, object]]:
    with pair.admin() as admin:
        return list(admin.get("/api/engines").json())


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_least_in_flight_spreads_load_and_caps_each_engine(
    pair: ThreadGateway, sims: list[SimHandle], key: str
) -> None:
    for sim in sims:
        sim.reset()
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(chat(key, pair.url, 60))) for _ in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 12
    for sim in sims:  # 12 requests, 2 engines of capacity 4: both full, neither over
        assert sim.stats()["max_in_flight"] == 4


def test_unhealthy_engine_is_taken_out_and_put_back(
    pair: ThreadGateway, sims: list[SimHandle], key: str
) -> None:
    sick, well = sims
    sick.set_faults(unhealthy=True)
    try:
        wait_for(lambda: not engines(pair)[0]["healthy"])
        sick.reset()
        well.reset()
        assert [chat(key, pair.url, 2) for _ in range(6)] == [200] * 6
        assert sick.stats()["requests"] == 0 and well.stats()["requests"] == 6
        assert "503" in str(engines(pair)[0]["last_error"])
    finally:
        sick.set_faults(unhealthy=False)
    wait_for(lambda: all(engine["healthy"] for engine in engines(pair)))
    metrics = scrape(pair.url)
    assert re.search(r'sparkplane_engine_healthy\{engine="[^"]+"\} 1\.0', metrics)


def test_metrics_per_tenant(pair: ThreadGateway, key: str) -> None:
    assert chat(key, pair.url, 3) == 200
    text = scrape(pair.url)
    for name in (
        "sparkplane_admitted_total",
        "sparkplane_completion_tokens_total",
        "sparkplane_request_duration_seconds_bucket",
        "sparkplane_tenant_in_flight",
        "sparkplane_tenant_queued",
        "sparkplane_queue_wait_seconds_count",
    ):
        assert re.search(rf'^{name}\{{[^}}]*tenant="spread"', text, re.M), name
    assert (
        'sparkplane_requests_total{endpoint="chat/completions",outcome="ok",tenant="spread"}'
        in text
    )


def test_ready_and_live(pair: ThreadGateway) -> None:
    assert httpx.get(pair.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(pair.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"engine": "ok", "database": "ok", "audit": "ok"}


def test_docs_load_nothing_from_outside(pair: ThreadGateway) -> None:
    for page in ("/docs", "/redoc"):
        html = httpx.get(pair.url + page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(a.startswith("/docs-assets/") for a in assets), assets
        assert "cdn." not in html and "googleapis" not in html
        for asset in assets:
            response = httpx.get(pair.url + asset)
            assert response.status_code == 200 and len(response.content) > 100, asset
    schema = httpx.get(pair.url + "/openapi.json").json()
    assert "/api/tenants" in schema["paths"] and "/v1/chat/completions" in schema["paths"]


def test_grafana_dashboard_uses_only_exported_metrics(pair: ThreadGateway, key: str) -> None:
    import json

    assert chat(key, pair.url, 1) == 200
    with pair.admin() as admin:  # make sure rejection and auth-failure series exist
        limited = new_tenant(admin, "dash-rpm", rpm=1)
    assert chat(limited, pair.url, 1) == 200
    assert chat(limited, pair.url, 1) == 429
    httpx.get(pair.url + "/v1/models", headers={"Authorization": "Bearer nope"})
    exported = set(re.findall(r"^(sparkplane_\w+?)(?:\{| )", scrape(pair.url), re.M))
    dashboard = json.loads((Path(__file__).parents[3] / "docs/grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"sparkplane_\w+", target["expr"])
    }
    assert used and used <= exported, used - exported


def test_a_dead_engine_is_skipped_without_failing_requests(tmp_path: Path) -> None:
    alive, doomed = (start_simulator(max_num_seqs=4, time_scale=0.01) for _ in range(2))
    # A slow health interval: the gateway learns of the death from the failed connection.
    settings = make_settings(
        tmp_path, [doomed.url, alive.url], engine_capacity=4, engine_health_interval=60
    )
    server = ThreadGateway(settings)
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "failover")
        doomed.stop()
        assert [chat(key, server.url, 2) for _ in range(4)] == [200] * 4
        assert alive.stats()["completed"] == 4
        state = {e["url"]: e for e in engines(server)}
        assert state[doomed.url]["healthy"] is False
        assert "cannot connect" in str(state[doomed.url]["last_error"]).lower()
    finally:
        server.stop()
        alive.stop()


async def test_engine_closing_idle_connections_costs_no_request(tmp_path: Path) -> None:
    import asyncio

    import aiohttp

    # The engine drops idle connections after 0.5 s; the gateway keeps them longer (the worst
    # case), and bursts come right when the engine is closing them.
    sim = start_simulator(time_scale=0.001, max_num_seqs=32, keepalive_s=0.5)
    settings = make_settings(tmp_path, [sim.url], engine_capacity=32, engine_keepalive=30.0)
    server = ThreadGateway(settings)
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "bursty", max_concurrency=32)
        statuses: list[int] = []
        headers = {"Authorization": f"Bearer {key}"}
        body = {
            "model": "sim-model",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 2,
        }
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(server.url, connector=connector) as session:

            async def one() -> None:
                async with session.post("/v1/chat/completions", json=body, headers=headers) as r:
                    await r.read()
                    statuses.append(r.status)

            for index in range(12):
                await asyncio.gather(*(one() for _ in range(16)))
                await asyncio.sleep(0.5 * (0.97 + (index % 7) * 0.01))
        assert statuses == [200] * len(statuses) and len(statuses) == 192
    finally:
        server.stop()
        sim.stop()
