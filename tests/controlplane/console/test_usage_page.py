"""The usage page's per-key and per-model tables and their CSV, from calls through the gateway."""

from __future__ import annotations

import csv
import io
import time

import openai

from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.server import ConsoleServer
from tests.controlplane.console.test_tenant_pages import create_key, create_tenant


def _csv_rows(admin: ConsoleClient, tenant: str, by: str, requests: int) -> list[dict[str, str]]:
    """The CSV's rows once `requests` calls are counted (usage reaches the database in batches)."""
    deadline = time.monotonic() + 10
    while True:
        response = admin.get("/usage.csv", params={"tenant": tenant, "by": by})
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "text/csv"
        )
        rows = list(csv.DictReader(io.StringIO(response.text)))
        if sum(int(row["requests"]) for row in rows) >= requests or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_per_key_and_per_model_tables_and_csv(
    admin: ConsoleClient, auditor: ConsoleClient, server: ConsoleServer
) -> None:
    tenant = create_tenant(admin, server)
    keys = [create_key(admin, tenant) for _ in range(2)]
    for key, calls in zip(keys, (2, 1), strict=True):
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
        for _ in range(calls):
            sdk.chat.completions.create(
                model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
    by_key = _csv_rows(admin, tenant, "key", requests=3)
    assert sorted(row["requests"] for row in by_key) == ["1", "2"]
    assert all(row["key"].endswith("… app") and row["estimated"] == "False" for row in by_key)
    assert {row["completion_tokens"] for row in by_key} == {"4", "8"}
    (by_model,) = _csv_rows(admin, tenant, "model", requests=3)
    assert (by_model["model"], by_model["requests"], by_model["key_id"]) == ("sim-model", "3", "")

    page = auditor.get("/usage", params={"tenant": tenant}).text
    key_table = page.split('id="table-by-key"')[1].split("</table>")[0]
    model_table = page.split('id="table-by-model"')[1].split("</table>")[0]
    assert all(row["key"] in key_table for row in by_key) and "reported" in key_table
    assert "sim-model" in model_table
    bad = admin.get("/usage.csv", params={"by": "colour"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "by"
