"""Findings 2 and 11: over-deep JSON is refused first, a server error is audited as one, and
every error a client sees (the engine's too) is the one OpenAI error shape (issue 17)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from controlplane.gateway.request import MAX_JSON_DEPTH
from tests.controlplane.conftest import new_tenant
from tests.controlplane.harness import ThreadGateway, free_port, make_settings
from tests.enginesim import SimHandle
from tests.security.conftest import admission_idle, completions_of

ERROR_KEYS = {"message", "type", "param", "code"}


def post(gateway: ThreadGateway, key: str, content: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = gateway.url + "/v1/chat/completions"
    return httpx.post(url, content=content, headers=headers, timeout=30)


def nested(depth: int) -> bytes:
    """A chat body with `depth` levels of nesting in an extra field, no max_tokens."""
    deep = b'{"a":' * (depth - 1) + b"1" + b"}" * (depth - 1)
    return (
        b'{"model":"sim-model","messages":[{"role":"user","content":"hi"}],"metadata":'
        + deep
        + b"}"
    )


@pytest.mark.parametrize("depth", [300, 1000])
def test_over_deep_json_is_refused_with_400_and_audited_as_refused(
    gateway: ThreadGateway, depth: int
) -> None:
    tenant = f"deep-{depth}"
    with gateway.admin() as admin:
        key = new_tenant(admin, tenant, max_tokens=16)  # a cap: the gateway rewrites the body
    response = post(gateway, key, nested(depth))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS and error["code"] == "too_deep"
    (entry,) = completions_of(gateway, tenant)
    assert entry["outcome"] == "refused" and entry["status"] == 400
    assert admission_idle(gateway)


def test_the_depth_bound_is_exact(gateway: ThreadGateway) -> None:
    """254 levels pass (and are written again under a cap), 255 do not: the bound is what
    orjson writes, so a change of orjson's limit shows here."""
    with gateway.admin() as admin:
        key = new_tenant(admin, "deep-bound", max_tokens=4)
    assert post(gateway, key, nested(MAX_JSON_DEPTH)).status_code == 200
    refused = post(gateway, key, nested(MAX_JSON_DEPTH + 1))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "too_deep"


def test_deep_brackets_inside_strings_are_not_nesting(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "deep-in-string", max_tokens=4)
    text = "[{" * 2000
    body = (
        b'{"model":"sim-model","messages":[{"role":"user","content":"'
        + text.encode()
        + b'\\"]}"}]}'
    )
    response = post(gateway, key, body)
    assert response.status_code == 200, response.text


def test_an_engine_400_reaches_the_client_in_the_one_error_shape(
    gateway: ThreadGateway, sim: SimHandle
) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "no-messages")
    response = post(gateway, key, b'{"model":"sim-model","max_tokens":4}')
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["type"] == "invalid_request_error"  # not vLLM's "BadRequestError"
    assert isinstance(error["code"], str)  # not vLLM's integer status
    assert error["param"] == "messages" and "messages" in error["message"]
    (entry,) = completions_of(gateway, "no-messages")
    assert entry["outcome"] == "upstream_error" and entry["status"] == 400


def test_an_engine_500_reaches_the_client_in_the_one_error_shape(
    gateway: ThreadGateway, sim: SimHandle
) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "engine-fails")
    sim.set_faults(fail_next=1, error_status=500)
    response = post(gateway, key, b'{"model":"sim-model","messages":[{"role":"user"}]}')
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["type"] == "server_error" and error["code"] == "engine_error"


# ---- a server error inside the relay ----------------------------------------------------


def deep_usage_event() -> bytes:
    """An SSE event the relay must rewrite (it strips usage) but cannot write back: nested
    deeper than orjson writes. An engine that misbehaves like this is a server-side fault."""
    deep = b"[" * 300 + b"]" * 300
    return (
        b'data: {"id":"x","object":"chat.completion.chunk","model":"stub-model","choices":'
        b'[{"index":0,"delta":{"content":"hi"},"finish_reason":null}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1},"junk":' + deep + b"}\n\n"
    )


@pytest.fixture(scope="module")
def broken_engine() -> Iterator[str]:
    """A loopback HTTP server that speaks enough of vLLM to be healthy, then streams an event
    the relay cannot handle."""

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="")

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub-model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(deep_usage_event())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    port = free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/v1"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)


def test_a_server_error_in_the_relay_is_audited_as_one(broken_engine: str, tmp_path: Path) -> None:
    server = ThreadGateway(make_settings(tmp_path, [broken_engine]))
    try:
        with server.admin() as admin:
            key = new_tenant(admin, "victim")
        body: dict[str, Any] = {
            "model": "stub-model",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {key}"}
        received = b""
        url = server.url + "/v1/chat/completions"
        with (
            contextlib.suppress(httpx.HTTPError),  # the stream is cut off
            httpx.stream("POST", url, json=body, headers=headers) as response,
        ):
            assert response.status_code == 200
            for part in response.iter_raw():
                received += part
        assert b"[DONE]" not in received  # the client can tell it did not end well
        (entry,) = completions_of(server, "victim")
        assert entry["outcome"] == "server_error", entry
        assert admission_idle(server)
    finally:
        server.stop()
