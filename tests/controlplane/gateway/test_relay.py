"""The official `openai` SDK against the gateway in front of the engine simulator."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from controlplane.gateway.sse import StreamRelay
from tests.controlplane.conftest import new_tenant
from tests.controlplane.gateway.test_audit_events import entries
from tests.controlplane.harness import ThreadGateway, make_settings
from tests.enginesim import SimHandle, start_simulator


@pytest.fixture(scope="module")
def key(gateway: ThreadGateway) -> str:
    with gateway.admin() as admin:
        return new_tenant(admin, "acme", max_tokens=50)


def client(gateway: ThreadGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def test_models_lists_engine_models(gateway: ThreadGateway, key: str) -> None:
    ids = sorted(model.id for model in client(gateway, key).models.list())
    assert ids == ["other-model", "sim-model"]


def test_models_filtered_by_allow_list(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        limited = new_tenant(admin, "limited", allowed_models=["sim-model"])
    sdk = client(gateway, limited)
    assert [model.id for model in sdk.models.list()] == ["sim-model"]
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(
            model="other-model", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.code == "model_not_found"


def test_chat_plain_reports_usage(gateway: ThreadGateway, key: str) -> None:
    reply = client(gateway, key).chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 5


def test_plain_answers_and_errors_carry_their_length(gateway: ThreadGateway, key: str) -> None:
    url, headers = gateway.url + "/v1/chat/completions", {"Authorization": f"Bearer {key}"}
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for payload, status in ((body, 200), ({**body, "model": "absent"}, 404)):
        answer = httpx.post(url, json=payload, headers=headers)
        assert answer.status_code == status
        assert int(answer.headers["content-length"]) == len(answer.content)
        assert "transfer-encoding" not in answer.headers


def test_stream_strips_usage_the_client_did_not_ask_for(gateway: ThreadGateway, key: str) -> None:
    chunks = list(
        client(gateway, key).chat.completions.create(
            model="sim-model",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=7,
            stream=True,
        )
    )
    assert chunks, "no chunks relayed"
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_stream_keeps_usage_when_asked(gateway: ThreadGateway, key: str) -> None:
    chunks = list(
        client(gateway, key).chat.completions.create(
            model="sim-model",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=7,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = [chunk.usage for chunk in chunks if chunk.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 7


def test_tools_and_response_format_pass_through(gateway: ThreadGateway, key: str) -> None:
    # The relay must hand the engine's tool calls and JSON over unchanged, whole and streamed
    # (the real engine's are checked in tests/e2e/test_appliance.py).
    sdk = client(gateway, key)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "x"}]
    reply = sdk.chat.completions.create(
        model="sim-model",
        messages=messages,
        max_tokens=4,
        tools=tools,  # type: ignore[arg-type]
    )
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert (call.type, call.function.name) == ("function", "lookup") and call.id
    assert json.loads(call.function.arguments) == {"sim": True}
    streamed = list(
        sdk.chat.completions.create(
            model="sim-model",
            messages=messages,
            max_tokens=4,
            tools=tools,
            stream=True,  # type: ignore[arg-type]
        )
    )
    deltas = [d for c in streamed if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert {d.function.name for d in deltas if d.function and d.function.name} == {"lookup"}
    assert json.loads("".join(d.function.arguments or "" for d in deltas if d.function)) == {
        "sim": True
    }
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "tool_calls"
    answer = sdk.chat.completions.create(
        model="sim-model",
        messages=messages,
        max_tokens=6,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)


def test_completions_and_embeddings(gateway: ThreadGateway, key: str) -> None:
    sdk = client(gateway, key)
    text = sdk.completions.create(model="sim-model", prompt="once upon", max_tokens=3)
    assert text.usage is not None and text.usage.completion_tokens == 3
    vectors = sdk.embeddings.create(model="sim-model", input=["a", "b"])
    assert len(vectors.data) == 2


@pytest.mark.parametrize("api_key", ["", "sk-sp-not-a-real-key-0000000000000000", "junk"])
def test_bad_keys_get_401(gateway: ThreadGateway, api_key: str) -> None:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "sim-model"},
        headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] in {"missing_api_key", "invalid_api_key"}


def test_sdk_maps_401(gateway: ThreadGateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "sk-sp-wrongwrongwrongwrongwrong").models.list()


def test_revocation_is_effective_on_the_next_request(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "revoked-co")
        sdk = client(gateway, key)
        assert sdk.models.list().data  # cached now
        key_id = admin.get("/api/keys", params={"tenant": "revoked-co"}).json()[0]["id"]
        assert admin.post(f"/api/keys/{key_id}/revoke").status_code == 200
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk.models.list()
    assert caught.value.code == "revoked_api_key"


def test_max_tokens_cap(gateway: ThreadGateway, key: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway, key).chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "x"}], max_tokens=51
        )
    assert caught.value.code == "max_tokens_exceeded"
    # Without max_tokens the cap is applied, so the engine cannot run to the context's end.
    reply = client(gateway, key).chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 50


def test_sdk_maps_429_to_rate_limit_error(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "one-a-minute", rpm=1)
    sdk = client(gateway, key)
    sdk.chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "x"}], max_tokens=1
    )
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "x"}], max_tokens=1
        )
    assert caught.value.code == "rpm_limit"
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_expired_key_is_refused(gateway: ThreadGateway) -> None:
    from datetime import timedelta

    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from controlplane.core.db import make_engine, utcnow
    from controlplane.tenancy.models import ApiKey
    from controlplane.tenancy.store import commit_auth_change

    with gateway.admin() as admin:
        key = new_tenant(admin, "short-lived")
        key_id = admin.get("/api/keys", params={"tenant": "short-lived"}).json()[0]["id"]
    sdk = client(gateway, key)
    assert sdk.models.list().data
    engine = make_engine(gateway.settings.database_url)
    with Session(engine) as session:  # as if its expiry date had come
        yesterday = utcnow() - timedelta(days=1)
        session.execute(update(ApiKey).where(ApiKey.id == key_id).values(expires_at=yesterday))
        commit_auth_change(session)
    engine.dispose()
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk.models.list()
    assert caught.value.code == "expired_api_key"


@pytest.mark.timing
def test_stream_is_relayed_as_it_is_generated(tmp_path: Path) -> None:
    slow = start_simulator(time_scale=1.0, decode_tps_single=40.0, decode_tps_at_16=20.0)
    server = ThreadGateway(make_settings(tmp_path, [slow.url]))
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "live")
        started = time.monotonic()
        arrivals = []
        for chunk in client(server, key).chat.completions.create(
            model="sim-model",
            messages=[{"role": "user", "content": "x"}],
            max_tokens=40,
            stream=True,
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - started)
        # 40 tokens at 40 tok/s take about 1 s: the first must arrive long before the last.
        assert len(arrivals) >= 30
        assert arrivals[0] < 0.3 and arrivals[-1] > 0.8, (arrivals[0], arrivals[-1])
    finally:
        server.stop()
        slow.stop()


def test_the_fastapi_routes_serve_calls_as_the_fast_path_does(
    sim: SimHandle, tmp_path: Path
) -> None:
    """The /v1 routes (OpenAPI, a plain FastAPI app) and the fast path both only call `relay`."""
    server = ThreadGateway(make_settings(tmp_path, [sim.url]), fast_path=False)
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "routed", max_tokens=5)
        chat = client(server, key).chat.completions
        ask: dict[str, Any] = {"model": "sim-model", "messages": [{"role": "user", "content": "x"}]}
        reply = chat.create(**ask)
        assert reply.usage is not None and reply.usage.completion_tokens == 5
        chunks = list(chat.create(**ask, stream=True))
        assert chunks and all(chunk.usage is None for chunk in chunks)
        with pytest.raises(openai.BadRequestError) as refused:
            chat.create(**ask, max_tokens=6)
        assert refused.value.code == "max_tokens_exceeded"
        with pytest.raises(openai.AuthenticationError):
            client(server, "sk-sp-wrongwrongwrongwrongwrong").chat.completions.create(**ask)
    finally:
        server.stop()


def _last_event(
    server: ThreadGateway, key: str, max_tokens: int = 20
) -> tuple[list[bytes], dict[str, Any]]:
    """The events of one streamed call, and the error its last event carries."""
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "x"}],
            "max_tokens": max_tokens, "stream": True}  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers=headers,
                      timeout=30) as answer:  # fmt: skip
        assert answer.status_code == 200
        raw = answer.read()
    events = [event for event in raw.split(b"\n\n") if event]
    assert events[-1].startswith(b"data: {")
    return events, json.loads(events[-1][len(b"data: ") :])["error"]


def test_a_stream_the_engine_breaks_off_ends_with_an_error_event(tmp_path: Path) -> None:
    """Not a cut connection: the one error shape as the last event (OpenAI's SDK raises it),
    no [DONE], and the call recorded as an engine error."""
    sim = start_simulator(time_scale=0.01)
    server = ThreadGateway(make_settings(tmp_path, [sim.url]))
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "cut")
        sim.set_faults(drop_next=1, drop_after_tokens=3)
        events, error = _last_event(server, key)
        assert len(events) >= 2 and b"[DONE]" not in b"".join(events)  # tokens came first
        assert error == {"message": "the engine's answer broke off", "type": "api_error",
                         "param": None, "code": "engine_error"}  # fmt: skip
        done = [f for kind, _, f in entries(server.settings.data_dir) if kind == "api.completion"]
        assert done[-1]["outcome"] == "engine_error"
        sim.set_faults(drop_next=1, drop_after_tokens=3)
        with pytest.raises(openai.APIError, match="broke off"):
            for _ in client(server, key).chat.completions.create(
                model="sim-model", messages=[{"role": "user", "content": "x"}], stream=True
            ):
                pass
    finally:
        server.stop()
        sim.stop()


def test_a_fault_of_the_gateway_mid_stream_ends_with_an_internal_error_event(
    sim: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ThreadGateway(make_settings(tmp_path, [sim.url]))
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "faulty")
        feed, calls = StreamRelay.feed, []

        def failing_feed(relay: StreamRelay, data: bytes) -> bytes:
            calls.append(data)
            if len(calls) == 3:
                raise RuntimeError("a bug in the relay")
            return feed(relay, data)

        monkeypatch.setattr(StreamRelay, "feed", failing_feed)
        events, error = _last_event(server, key)
        assert len(events) >= 2 and error["code"] == "internal_error"
        assert "service log" in error["message"] and "bug" not in error["message"]
        done = [f for kind, _, f in entries(server.settings.data_dir) if kind == "api.completion"]
        assert done[-1]["outcome"] == "server_error"
    finally:
        server.stop()


def test_a_stream_that_outlasts_the_request_timeout_ends_with_a_timeout_event(
    tmp_path: Path,
) -> None:
    slow = start_simulator(time_scale=1.0, decode_tps_single=20.0, decode_tps_at_16=10.0)
    server = ThreadGateway(make_settings(tmp_path, [slow.url], request_timeout=1.0))
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "slow")
        events, error = _last_event(server, key, max_tokens=40)  # at 20 tok/s: 2 s, not 1
        assert len(events) >= 2 and error["code"] == "request_timeout", error
        done = [f for kind, _, f in entries(server.settings.data_dir) if kind == "api.completion"]
        assert done[-1]["outcome"] == "timeout"
    finally:
        server.stop()
        slow.stop()
