"""Every error path answers in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from controlplane.admission.limits import Rejected, RejectReason
from controlplane.api import admin_tokens
from controlplane.api.errors import api_error
from controlplane.audit.errors import AuditUnavailable
from controlplane.core.errors import DomainError
from controlplane.gateway.errors import (
    BodyTimeout,
    BodyTooLarge,
    EngineBrokeOff,
    EngineTimeout,
    EngineUnavailable,
    InvalidRequest,
    ModelNotFound,
)
from controlplane.tenancy.keycache import AuthFailed
from controlplane.tenancy.store import Conflict, NotFound
from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle


def assert_error(response: httpx.Response, status: int, code: str | None) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


@pytest.fixture(scope="module")
def key(gateway: ThreadGateway) -> str:
    with gateway.admin() as admin:
        return new_tenant(admin, "shape", max_tokens=10)


def post(gateway: ThreadGateway, key: str, body: object = None, **kwargs: object) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        **kwargs,
    )  # type: ignore[arg-type]


def test_unknown_route_and_method(gateway: ThreadGateway) -> None:
    assert_error(httpx.get(gateway.url + "/nope"), 404, "not_found")
    assert_error(httpx.get(gateway.url + "/v1/chat/completions"), 405, "method_not_allowed")


def test_inference_request_errors(gateway: ThreadGateway, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = gateway.url + "/v1/chat/completions"
    assert_error(httpx.post(url, content=b"{not json", headers=headers), 400, "invalid_json")
    assert_error(post(gateway, key, [1, 2]), 400, "invalid_body")
    error = assert_error(post(gateway, key, {"messages": []}), 400, "missing_model")
    assert error["param"] == "model"
    assert_error(post(gateway, key, {"model": "nope"}), 404, "model_not_found")
    error = assert_error(
        post(gateway, key, {"model": "sim-model", "max_tokens": 11}), 400, "max_tokens_exceeded"
    )
    assert error["param"] == "max_tokens"
    assert_error(post(gateway, key, {"model": "sim-model", "stream": "yes"}), 400, "invalid_value")
    big = b'{"model": "sim-model", "x": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    assert_error(httpx.post(url, content=big, headers=headers), 413, "body_too_large")


def test_auth_errors(gateway: ThreadGateway) -> None:
    url = gateway.url + "/v1/models"
    assert_error(httpx.get(url), 401, "missing_api_key")
    assert_error(
        httpx.get(url, headers={"Authorization": "Bearer sk-sp-" + "x" * 43}),
        401,
        "invalid_api_key",
    )
    assert_error(httpx.get(gateway.url + "/api/tenants"), 401, "not_authenticated")
    assert_error(
        httpx.get(gateway.url + "/api/tenants", headers={"Authorization": "Bearer no"}),
        401,
        "invalid_admin_token",
    )


def test_disabled_tenant_is_refused(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "gone-soon")
        assert admin.post("/api/tenants/gone-soon/disable").status_code == 200
    assert_error(
        httpx.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}),
        403,
        "tenant_disabled",
    )


def test_admin_errors(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        assert_error(admin.post("/api/tenants", json={"name": "Bad Name"}), 422, "invalid_value")
        assert_error(
            admin.post("/api/tenants", json={"name": "ok", "weight": -1}), 422, "invalid_value"
        )
        admin.post("/api/tenants", json={"name": "twice"})
        assert_error(admin.post("/api/tenants", json={"name": "twice"}), 409, "conflict")
        assert_error(admin.get("/api/tenants/absent"), 404, "not_found")
        assert_error(
            admin.patch("/api/tenants/twice", json={"max_concurrency": None}), 422, "invalid_value"
        )
        assert_error(admin.post("/api/keys/999999/revoke"), 404, "not_found")
        assert_error(admin.post("/api/keys", json={"tenant": "absent"}), 404, "not_found")


def test_engine_down_gives_503(sim: SimHandle, tmp_path_factory: pytest.TempPathFactory) -> None:
    dead = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    server = ThreadGateway(make_settings(tmp_path_factory.mktemp("dead"), [dead]))
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "orphan")
        assert_error(post(server, key, {"model": "sim-model"}), 503, "engine_unavailable")
        assert_error(
            httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}),
            503,
            "engine_unavailable",
        )
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["engine"] != "ok"
    finally:
        server.stop()


@pytest.fixture
def fragile(sim: SimHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadGateway]:
    server = ThreadGateway(make_settings(tmp_path_factory.mktemp("fragile"), [sim.url]))
    yield server
    server.stop()


def test_audit_unavailable_fails_closed(fragile: ThreadGateway) -> None:
    with fragile.admin() as admin:
        key = new_tenant(admin, "audited")
    body = {"model": "sim-model", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
    assert post(fragile, key, body).status_code == 200
    state = fragile.app.state
    with state.sessions() as db:
        auditor = admin_tokens.rotate(db, state.pepper, "audit-bot", "auditor").token
        db.commit()
    audit = state.audit
    import asyncio

    asyncio.run_coroutine_threadsafe(audit.close(), fragile.loop).result(timeout=30)
    assert_error(post(fragile, key, {"model": "sim-model"}), 503, "audit_unavailable")
    # A bad key is still refused as such (its api.auth_failed entry is logged instead).
    assert_error(post(fragile, key[:-4] + "AAAA", {"model": "sim-model"}), 401, "invalid_api_key")
    with fragile.admin() as admin:
        assert_error(admin.post("/api/tenants", json={"name": "later"}), 503, "audit_unavailable")
    # Who may not change anything is told so, whatever the audit store's state.
    headers = {"Authorization": f"Bearer {auditor}"}
    refused = httpx.post(fragile.url + "/api/tenants", json={"name": "x"}, headers=headers)
    assert_error(refused, 403, "admin_role_required")
    ready = httpx.get(fragile.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["audit"] != "ok"


def test_slow_body_gets_408(sim: SimHandle, tmp_path_factory: pytest.TempPathFactory) -> None:
    import socket

    server = ThreadGateway(
        make_settings(tmp_path_factory.mktemp("slow"), [sim.url], body_timeout=0.5)
    )
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "trickler")
        with socket.create_connection(("127.0.0.1", server.settings.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                b"Authorization: Bearer " + key.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            reply = sock.recv(65536).decode()
        head, _, body = reply.partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 408")
        assert '"code":"body_timeout"' in body
    finally:
        server.stop()


def test_engine_too_slow_gives_504(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.enginesim import start_simulator

    slow = start_simulator(time_scale=0.01, faults={"delay_s": 3.0})
    server = ThreadGateway(
        make_settings(tmp_path_factory.mktemp("t"), [slow.url], request_timeout=0.5)
    )
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "patient")
        started = time.monotonic()
        body = {"model": "sim-model", "messages": [{"role": "user", "content": "x"}]}
        assert_error(post(server, key, body), 504, "request_timeout")
        assert time.monotonic() - started < 2.5
        assert server.call_in_loop(lambda: server.state().engines.engines[0].in_flight) == 0
    finally:
        server.stop()
        slow.stop()


def test_no_key_for_a_disabled_tenant(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        admin.post("/api/tenants", json={"name": "dormant"})
        admin.post("/api/tenants/dormant/disable")
        error = assert_error(admin.post("/api/keys", json={"tenant": "dormant"}), 409, "conflict")
        assert "enable it first" in str(error["message"])


def test_an_unexpected_error_in_the_relay_is_a_500_in_the_shape(
    gateway: ThreadGateway, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("controlplane.gateway.ingress.relay", broken)
    assert_error(post(gateway, key, {"model": "sim-model"}), 500, "internal_error")


@pytest.mark.parametrize(
    ("error", "status", "type_", "code", "headers"),
    [
        (Rejected(RejectReason.RPM, "slow down", 1.2), 429, "rate_limit_error", "rpm_limit",
         {"Retry-After": "2"}),
        (Rejected(RejectReason.ENGINE_UNAVAILABLE, "no engine", 5.0), 503, "service_unavailable",
         "engine_unavailable", {"Retry-After": "5"}),
        (AuthFailed(401, "revoked_api_key", "revoked"), 401, "authentication_error",
         "revoked_api_key", {"WWW-Authenticate": "Bearer"}),
        (AuthFailed(403, "tenant_disabled", "off"), 403, "permission_error", "tenant_disabled", {}),
        (NotFound("no tenant", param="name"), 404, "not_found_error", "not_found", {}),
        (Conflict("exists"), 409, "conflict_error", "conflict", {}),
        (InvalidRequest("bad", param="stream"), 400, "invalid_request_error", "invalid_value", {}),
        (ModelNotFound("none", param="model"), 404, "not_found_error", "model_not_found", {}),
        (BodyTooLarge("big"), 413, "invalid_request_error", "body_too_large", {}),
        (BodyTimeout("slow"), 408, "invalid_request_error", "body_timeout", {}),
        (EngineUnavailable("down"), 503, "service_unavailable", "engine_unavailable", {}),
        (EngineTimeout("late"), 504, "timeout_error", "request_timeout", {}),
        (EngineBrokeOff("broke"), 502, "api_error", "engine_error", {}),
    ],
)  # fmt: skip
def test_each_domain_error_has_one_http_answer(
    error: DomainError, status: int, type_: str, code: str, headers: dict[str, str]
) -> None:
    answer = api_error(error)
    assert (answer.status, answer.type, answer.code) == (status, type_, code)
    assert (answer.message, answer.param, answer.headers) == (error.message, error.param, headers)


def test_the_audit_store_failure_is_not_told_to_callers() -> None:
    answer = api_error(AuditUnavailable("OperationalError: disk I/O error at /var/lib/x.db"))
    assert (answer.status, answer.code) == (503, "audit_unavailable")
    assert "disk" not in answer.message and "audit store cannot be written" in answer.message
