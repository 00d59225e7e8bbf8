"""The order of an engine's queue is the control plane's: what the engine receives as `priority`
(the simulator with vLLM's `--scheduling-policy priority` records it per tenant)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle, start_simulator

CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator(max_num_seqs=2, time_scale=0.01, scheduling_policy="priority")
    yield handle
    handle.stop()


def engine_saw(sim: SimHandle, tenant: str) -> int | None:
    return sim.stats()["tenants"][tenant]["last_priority"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("engine_queue", [0, 2])
def test_a_client_cannot_set_its_place_in_the_engine_queue(
    sim: SimHandle, tmp_path: Path, engine_queue: int
) -> None:
    settings = make_settings(tmp_path, [sim.url], engine_capacity=2, engine_queue=engine_queue)
    gateway = ThreadGateway(settings)
    try:
        with gateway.admin() as admin:
            key = new_tenant(admin, f"jumper{engine_queue}", weight=4)
        headers = {"Authorization": f"Bearer {key}"}
        seen = []
        for stream in (False, True, False):
            body = CHAT | {"priority": -(10**9), "stream": stream}
            response = httpx.post(
                gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=10
            )
            assert response.status_code == 200, response.text
            seen.append(engine_saw(sim, f"jumper{engine_queue}"))
    finally:
        gateway.stop()
    if engine_queue:  # the grants' start tags: 1/weight apart, in millionths
        assert seen == [0, 250_000, 500_000]
    else:  # no engine queue: no tags, and the client's own value removed all the same
        assert seen == [0, 0, 0]
