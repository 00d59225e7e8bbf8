"""Usage per key and per model through the gateway: the ledger, `GET /api/usage`, `sparkplane
usage`, the estimated counts of a stream the client left, and the monthly quota."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from controlplane.core.db import utcnow
from controlplane.tenancy.models import DailyUsage, Tenant
from tests.controlplane.gateway.test_capture import completion_entry
from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle, start_simulator

REPO = Path(__file__).resolve().parents[3]
SPARKPLANE = Path(sys.executable).with_name("sparkplane")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator(max_num_seqs=16, time_scale=0.01, models="sim-model,other-model")
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def gateway(sim: SimHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadGateway]:
    # The ledger flushes only when a test says so (a controlled clock for quotas and sums).
    settings = make_settings(tmp_path_factory.mktemp("usage"), [sim.url], usage_flush_interval=3600)
    server = ThreadGateway(settings)
    yield server
    server.stop()


def flush(gateway: ThreadGateway) -> None:
    """Write what the ledger counted and reload its day and month totals, now."""
    future = asyncio.run_coroutine_threadsafe(gateway.state().usage.flush(), gateway.loop)
    future.result(timeout=10)


def make_keys(
    gateway: ThreadGateway, tenant: str, count: int, **limits: Any
) -> list[dict[str, Any]]:
    with gateway.admin() as admin:
        assert admin.post("/api/tenants", json={"name": tenant, **limits}).status_code == 201
        keys = [admin.post("/api/keys", json={"tenant": tenant, "name": f"app{i}"})
                for i in range(count)]  # fmt: skip
    return [key.json() for key in keys]


def chat(gateway: ThreadGateway, key: str, model: str, tokens: int) -> httpx.Response:
    body = {"model": model, "max_tokens": tokens, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})  # fmt: skip


def usage(gateway: ThreadGateway, **params: str) -> list[dict[str, Any]]:
    with gateway.admin() as admin:
        response = admin.get("/api/usage", params=params)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def test_usage_per_key_and_per_model(gateway: ThreadGateway) -> None:
    first, second = make_keys(gateway, "perkey", 2)
    spent: dict[tuple[int, str], int] = {}
    for key, model, tokens in ((first, "sim-model", 3), (first, "other-model", 5),
                               (second, "sim-model", 7), (first, "sim-model", 2)):  # fmt: skip
        answer = chat(gateway, key["key"], model, tokens)
        assert answer.status_code == 200
        used = answer.json()["usage"]
        slot = (key["id"], model)
        spent[slot] = spent.get(slot, 0) + used["prompt_tokens"] + used["completion_tokens"]
    flush(gateway)

    by_key = {row["key_id"]: row for row in usage(gateway, tenant="perkey", by="key")}
    assert set(by_key) == {first["id"], second["id"]}
    assert by_key[first["id"]]["requests"] == 3 and by_key[second["id"]]["requests"] == 1
    assert by_key[first["id"]]["group"] == f"{first['prefix']}… app0"
    assert by_key[second["id"]]["total_tokens"] == spent[(second["id"], "sim-model")]
    assert not any(row["estimated"] for row in by_key.values())

    by_model = {row["group"]: row for row in usage(gateway, tenant="perkey", by="model")}
    assert by_model["other-model"]["requests"] == 1
    assert by_model["sim-model"]["total_tokens"] == (
        spent[(first["id"], "sim-model")] + spent[(second["id"], "sim-model")]
    )
    (today,) = usage(gateway, tenant="perkey", by="day")
    assert today["group"] == utcnow().date().isoformat() and today["requests"] == 4

    yesterday = (utcnow().date() - timedelta(days=1)).isoformat()
    assert usage(gateway, tenant="perkey", to=yesterday) == []  # the date range is applied
    with gateway.admin() as admin:
        backwards = admin.get("/api/usage", params={"from": "2026-12-31", "to": "2026-01-01"})
        assert backwards.status_code == 200 and backwards.json() == []  # no day, no usage
        assert admin.get("/api/usage", params={"tenant": "nobody"}).json() == []
        assert admin.get("/api/usage", params={"to": "0001-01-01"}).json() == []  # schemathesis
        assert admin.get("/api/usage", params={"by": "colour"}).status_code == 422


def test_a_stream_the_client_left_is_counted_as_estimated(gateway: ThreadGateway) -> None:
    (key,) = make_keys(gateway, "leaver", 1)
    body = {"model": "sim-model", "max_tokens": 400, "stream": True,
            "messages": [{"role": "user", "content": "a long answer please"}]}  # fmt: skip
    headers = {"Authorization": f"Bearer {key['key']}"}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body,
                      headers=headers, timeout=30) as response:  # fmt: skip
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if '"content"' in line:
                break  # leave mid-way: no usage chunk ever reaches the gateway
    entry = completion_entry(gateway, request_id)
    assert entry["outcome"] == "cancelled" and entry["tokens_estimated"] is True
    assert chat(gateway, key["key"], "sim-model", 2).status_code == 200  # and one reported
    flush(gateway)
    rows = {row["estimated"]: row for row in usage(gateway, tenant="leaver", by="key")}
    assert rows[True]["requests"] == 1 and rows[True]["key_id"] == key["id"]
    assert rows[True]["completion_tokens"] == entry["completion_tokens"] > 0
    assert rows[False]["requests"] == 1


def add_usage(gateway: ThreadGateway, tenant: str, day_offset: int, tokens: int) -> None:
    """Usage rows as earlier traffic of this (or last) month left them."""
    engine = gateway.app.state.db_engine
    today = utcnow().date()
    day = today.replace(day=1) - timedelta(days=1) if day_offset < 0 else today
    with engine.begin() as conn:
        tenant_id = conn.execute(select(Tenant.id).where(Tenant.name == tenant)).scalar_one()
        conn.execute(insert(DailyUsage).values(
            tenant_id=tenant_id, day=day, key_id=0, model="", estimated=False, requests=1,
            prompt_tokens=tokens // 2, completion_tokens=tokens - tokens // 2,
        ))  # fmt: skip


def test_monthly_quota_refuses_with_429(gateway: ThreadGateway) -> None:
    (over,) = make_keys(gateway, "overquota", 1, monthly_tokens=1000)
    (fresh,) = make_keys(gateway, "newmonth", 1, monthly_tokens=1000)
    add_usage(gateway, "overquota", 0, 1000)  # this month: the quota is used up
    add_usage(gateway, "newmonth", -1, 50_000)  # last month's usage does not count
    flush(gateway)
    refused = chat(gateway, over["key"], "sim-model", 2)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "monthly_token_quota" and error["type"] == "rate_limit_error"
    assert error["message"] == "monthly token quota of 1000 used up"
    assert int(refused.headers["retry-after"]) > 0
    assert chat(gateway, fresh["key"], "sim-model", 2).status_code == 200
    # Rows without a key (as revision 0005 migrates older usage) show as such.
    (row,) = usage(gateway, tenant="overquota", by="key")
    assert (row["group"], row["key_id"], row["total_tokens"]) == ("(unknown)", 0, 1000)


def sparkplane_usage(gateway: ThreadGateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKPLANE_")}
    env["SPARKPLANE_DATA_DIR"] = str(gateway.settings.data_dir)
    return subprocess.run([str(SPARKPLANE), "usage", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_cli_prints_the_same_figures(gateway: ThreadGateway) -> None:
    (key,) = make_keys(gateway, "clitenant", 1)
    assert chat(gateway, key["key"], "other-model", 4).status_code == 200
    flush(gateway)
    done = sparkplane_usage(gateway, "--tenant", "clitenant", "--by", "model", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == usage(gateway, tenant="clitenant", by="model")
    table = sparkplane_usage(gateway, "--tenant", "clitenant", "--days", "1").stdout.splitlines()
    assert table[0].split() == ["tenant", "key", "requests", "prompt", "completion", "total",
                                "estimated"]  # fmt: skip
    assert table[1].startswith("clitenant") and f"{key['prefix']}… app0" in table[1]
    missing = sparkplane_usage(gateway, "--tenant", "nobody")
    assert missing.returncode == 1 and "nobody" in missing.stderr
