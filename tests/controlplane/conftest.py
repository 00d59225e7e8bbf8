"""Fixtures: a real engine simulator and a real gateway (uvicorn on 127.0.0.1) per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle, start_simulator


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator(max_num_seqs=16, time_scale=0.01, models="sim-model,other-model")
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def gateway(sim: SimHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadGateway]:
    server = ThreadGateway(make_settings(tmp_path_factory.mktemp("gw"), [sim.url]))
    yield server
    server.stop()


def new_tenant(admin: httpx.Client, name: str, **limits: Any) -> str:
    """Create a tenant and one key through the admin API; returns the key."""
    response = admin.post("/api/tenants", json={"name": name, **limits})
    assert response.status_code == 201, response.text
    response = admin.post("/api/keys", json={"tenant": name})
    assert response.status_code == 201, response.text
    return str(response.json()["key"])
