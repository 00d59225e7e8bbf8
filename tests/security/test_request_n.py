"""Finding 1: `n` is what the engine runs, so admission counts it (issue 17)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ThreadGateway
from tests.enginesim import SimHandle
from tests.security.conftest import admission_idle


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], **extra}


def post(gateway: ThreadGateway, key: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def in_flight(gateway: ThreadGateway, tenant: str) -> int:
    def count() -> int:
        states = gateway.state().admission.tenants.values()
        return sum(state.in_flight for state in states if state.policy.name == tenant)

    return int(gateway.call_in_loop(count))


def test_the_probes_n_1000_is_refused_before_the_engine(
    gateway: ThreadGateway, sim: SimHandle
) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "probe-n", max_tokens=64, max_concurrency=1)
    before = sim.stats()
    response = post(gateway, key, chat(n=1000, max_tokens=64))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "n" and error["type"] == "invalid_request_error"
    assert "1000" in error["message"]
    after = sim.stats()
    assert (after["requests"], after["rejected"]) == (before["requests"], before["rejected"])
    assert admission_idle(gateway)


def test_best_of_is_held_to_the_same_limit(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "probe-best-of", max_tokens=64)
    response = post(gateway, key, chat(best_of=50, max_tokens=8))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "best_of"


def test_n_of_a_wrong_type_is_refused_by_the_gateway(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "probe-n-type")
    for bad in ("3", 0, -1, 2.5, True):
        response = post(gateway, key, chat(n=bad, max_tokens=4))
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["param"] == "n"


def held_in_the_background(gateway: ThreadGateway, key: str, body: dict[str, Any]) -> list[int]:
    """Send `body` from a thread; returns the list its status lands in."""
    statuses: list[int] = []
    thread = threading.Thread(target=lambda: statuses.append(post(gateway, key, body).status_code))
    thread.start()
    return statuses


def test_n_sequences_take_n_of_the_tenants_concurrency(
    gateway: ThreadGateway, sim: SimHandle
) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "n-slots", max_concurrency=4, queue_timeout=0.3)
    sim.set_faults(delay_s=1.5)
    try:
        statuses = held_in_the_background(gateway, key, chat(n=4, max_tokens=2))
        deadline = time.monotonic() + 5
        while in_flight(gateway, "n-slots") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert in_flight(gateway, "n-slots") == 4  # four sequences: four of its four slots
        second = post(gateway, key, chat(max_tokens=2))
        assert second.status_code == 429, second.text
        assert second.json()["error"]["code"] == "tenant_concurrency_limit"
    finally:
        sim.set_faults(delay_s=0)
    deadline = time.monotonic() + 10
    while not statuses and time.monotonic() < deadline:
        time.sleep(0.02)
    assert statuses == [200]
    assert admission_idle(gateway)


def test_an_allowed_n_counts_n_times_max_tokens_against_the_token_budget(
    gateway: ThreadGateway, sim: SimHandle
) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "n-budget", daily_tokens=250, max_concurrency=8)
    sim.set_faults(delay_s=1.5)
    try:
        statuses = held_in_the_background(gateway, key, chat(n=4, max_tokens=64))
        deadline = time.monotonic() + 5
        while in_flight(gateway, "n-budget") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        # 4 x 64 = 256 tokens may come back: the 250 of today are spoken for.
        second = post(gateway, key, chat(max_tokens=1))
        assert second.status_code == 429, second.text
        assert second.json()["error"]["code"] == "daily_token_quota"
    finally:
        sim.set_faults(delay_s=0)
    deadline = time.monotonic() + 10
    while not statuses and time.monotonic() < deadline:
        time.sleep(0.02)
    assert statuses == [200]
    assert admission_idle(gateway)


def test_an_allowed_n_is_answered_with_n_choices(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "n-ok", max_concurrency=4)
    response = post(gateway, key, chat(n=2, max_tokens=3))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [choice["index"] for choice in body["choices"]] == [0, 1]
    assert body["usage"]["completion_tokens"] == 6
    assert admission_idle(gateway)
