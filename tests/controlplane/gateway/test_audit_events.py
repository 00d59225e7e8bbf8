"""What the gateway writes into the audit chain, in both audit_wait modes."""

from __future__ import annotations

import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select

from controlplane.audit.models import AuditEntry
from controlplane.audit.verify import verify_live
from controlplane.core.db import make_engine
from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle


def entries(data_dir: Path) -> list[tuple[str, str | None, dict[str, object]]]:
    engine = make_engine(f"sqlite:///{data_dir}/sparkplane.db")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(AuditEntry.kind, AuditEntry.tenant, AuditEntry.data).order_by(AuditEntry.seq)
            ).all()
    finally:
        engine.dispose()
    return [(kind, tenant, json.loads(data) if data else {}) for kind, tenant, data in rows]


@pytest.mark.parametrize("audit_wait", ["durable", "queued"])
def test_requests_and_admin_changes_are_audited(
    sim: SimHandle, tmp_path: Path, audit_wait: str
) -> None:
    server = ThreadGateway(make_settings(tmp_path, [sim.url], audit_wait=audit_wait))
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "audited", max_tokens=8)
            admin.patch("/api/tenants/audited", json={"rpm": 100})
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        client.chat.completions.create(
            model="sim-model", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        )
        with pytest.raises(openai.BadRequestError):  # refused by the gateway: still audited
            client.chat.completions.create(
                model="sim-model", max_tokens=9, messages=[{"role": "user", "content": "hi"}]
            )
        time.sleep(0.3)  # api.completion is written after the last byte
    finally:
        server.stop()
    log = entries(tmp_path)
    kinds = [kind for kind, _, _ in log]
    assert kinds[:3] == ["admin.tenant_create", "admin.key_create", "admin.tenant_update"]
    update = log[2][2]
    assert update["before"] == {"rpm": None} and update["after"] == {"rpm": 100}
    assert update["actor"] == "admin-token"
    assert "key" not in log[1][2]["after"]  # type: ignore[operator]
    request = next(fields for kind, _, fields in log if kind == "api.request")
    done = next(fields for kind, _, fields in log if kind == "api.completion")
    assert request["request_id"] == done["request_id"]
    assert done["outcome"] == "ok" and done["completion_tokens"] == 3 and done["status"] == 200
    refused = [fields for kind, _, fields in log if kind == "api.completion"][-1]
    assert refused["outcome"] == "refused" and refused["status"] == 400
    assert all(tenant == "audited" for _, tenant, _ in log)
    assert not any(key in json.dumps(fields) for _, _, fields in log)  # never the secret
    report = verify_live(
        make_engine(f"sqlite:///{tmp_path}/sparkplane.db"), [tmp_path / "audit-signing.pub"]
    )
    assert report.valid, report


def test_refused_credentials_are_audited_without_the_secret(sim: SimHandle, tmp_path: Path) -> None:
    server = ThreadGateway(make_settings(tmp_path, [sim.url]))
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "knocked")
            key_id = admin.get("/api/keys").json()[0]["id"]
            assert admin.post(f"/api/keys/{key_id}/revoke").status_code == 200
        chat = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}
        bearer = {"Authorization": f"Bearer {key}"}
        forged = {"Authorization": "Bearer " + key[:-4] + "AAAA"}
        wrong_admin = {"Authorization": "Bearer not-the-admin-token"}
        # Each from its own address: repeats from one address are summarised per window
        # (tests/security/test_auth_failure_flood.py), the first is recorded as it is.
        calls = [("POST", "/v1/chat/completions", {}), ("POST", "/v1/chat/completions", bearer),
                 ("GET", "/v1/models", forged), ("GET", "/api/tenants", wrong_admin)]  # fmt: skip
        for n, (method, path, headers) in enumerate(calls):
            transport = httpx.HTTPTransport(local_address=f"127.0.3.{n + 1}")
            with httpx.Client(base_url=server.url, transport=transport) as client:
                response = client.request(method, path, headers=headers,
                                          json=chat if method == "POST" else None)  # fmt: skip
                assert response.status_code == 401
    finally:
        server.stop()
    failures = [(tenant, fields) for kind, tenant, fields in entries(tmp_path)
                if kind == "api.auth_failed"]  # fmt: skip
    assert [(tenant, f["reason"], f["endpoint"]) for tenant, f in failures] == [
        (None, "missing_api_key", "/v1/chat/completions"),
        ("knocked", "revoked_api_key", "/v1/chat/completions"),
        (None, "invalid_api_key", "/v1/models"),
        (None, "invalid_admin_token", "/api/tenants"),
    ]
    revoked, forged_entry = failures[1][1], failures[2][1]
    assert (
        revoked["key_id"] == key_id and revoked["key_prefix"] == key[: len(revoked["key_prefix"])]
    )
    assert forged_entry["key_id"] is None and forged_entry["client"] == "127.0.3.3"
    assert failures[3][1]["key_prefix"] is None  # not key-shaped: nothing of it is kept
    text = json.dumps([fields for _, fields in failures])
    assert key not in text and "not-the-admin-token" not in text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("audit_wait", ["durable", "queued"])
def test_only_queued_audit_answers_while_the_store_cannot_commit(
    sim: SimHandle, tmp_path: Path, audit_wait: str, stream: bool
) -> None:
    server = ThreadGateway(make_settings(tmp_path, [sim.url], audit_wait=audit_wait))
    body = {"model": "sim-model", "max_tokens": 2, "stream": stream,
            "messages": [{"role": "user", "content": "x"}]}  # fmt: skip
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "patient")
        headers = {"Authorization": f"Bearer {key}"}
        # Another connection holds SQLite's write lock: the audit writer's next commit waits.
        lock = sqlite3.connect(tmp_path / "sparkplane.db", timeout=5, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(
                httpx.post, server.url + "/v1/chat/completions", json=body, headers=headers,
                timeout=30,
            )  # fmt: skip
            try:
                if audit_wait == "queued":  # accepted in the chain's order, committed later
                    call.result(timeout=10)
                else:  # no byte before api.request is committed
                    with pytest.raises(TimeoutError):
                        call.result(timeout=1.5)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            answer = call.result(timeout=30)
        assert answer.status_code == 200, answer.text
        assert (b"[DONE]" in answer.content) is stream
    finally:
        server.stop()  # closing the writer commits what it has queued
    kinds = [kind for kind, _, _ in entries(tmp_path)]
    assert kinds[-2:] == ["api.request", "api.completion"]


def test_completion_entries_carry_time_to_first_token(gateway: ThreadGateway) -> None:
    """`ttft_ms`: from the call's arrival to the first streamed event relayed to the client;
    a plain answer arrives whole (its time is `latency_ms`), so it has none."""
    with gateway.admin() as admin:
        key = new_tenant(admin, "timed")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    sent = time.monotonic()
    chunks = client.chat.completions.create(
        model="sim-model",
        max_tokens=16,
        messages=messages,
        stream=True,  # type: ignore[arg-type]
    )
    first_chunk = None
    for _ in chunks:
        first_chunk = first_chunk or time.monotonic() - sent
    client.chat.completions.create(model="sim-model", max_tokens=2, messages=messages)  # type: ignore[arg-type]
    done = [f for kind, tenant, f in entries(gateway.settings.data_dir)
            if kind == "api.completion" and tenant == "timed"]  # fmt: skip
    streamed, plain = done
    assert first_chunk is not None
    assert 0 < streamed["ttft_ms"] < streamed["latency_ms"]  # type: ignore[operator]
    assert streamed["ttft_ms"] <= first_chunk * 1000  # type: ignore[operator]
    assert plain["ttft_ms"] is None and plain["latency_ms"] > 0  # type: ignore[operator]
