"""A tenant's context cap (prompt + completion tokens) through the running gateway and simulator.

The simulator's `/tokenize` counts exactly what it reports as `usage.prompt_tokens` (one chat
message of L characters: 6 + ceil(L / 4) tokens), and it generates exactly `max_tokens` tokens,
so usage shows whether the engine was held to the cap.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from controlplane.gateway import context_cap
from tests.controlplane.api.test_error_shape import assert_error
from tests.controlplane.cli.test_tenants import sparkplane
from tests.controlplane.conftest import new_tenant
from tests.controlplane.gateway.test_audit_events import entries
from tests.controlplane.harness import ThreadGateway
from tests.enginesim import SimHandle

CAP = 1000
LONG = "w" * 3000  # 756 prompt tokens in one chat message: more bytes than the cap
PROMPT = 6 + 3000 // 4


def chat(gateway: ThreadGateway, key: str, content: str = "hi", **extra: Any) -> httpx.Response:
    body = {"model": "sim-model", "messages": [{"role": "user", "content": content}], **extra}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def complete(gateway: ThreadGateway, key: str, prompt: Any, **extra: Any) -> httpx.Response:
    body = {"model": "sim-model", "prompt": prompt, **extra}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(gateway.url + "/v1/completions", json=body, headers=headers, timeout=30)


def tokenize_calls(sim: SimHandle) -> int:
    return int(sim.stats()["tokenize_requests"])


def usage(response: httpx.Response) -> tuple[int, int]:
    assert response.status_code == 200, response.text
    data = response.json()["usage"]
    return data["prompt_tokens"], data["completion_tokens"]


@pytest.fixture(scope="module")
def key(gateway: ThreadGateway) -> str:
    with gateway.admin() as admin:
        return new_tenant(admin, "capped", max_context_tokens=CAP)


@pytest.fixture
def sim_faults(sim: SimHandle) -> Iterator[SimHandle]:
    yield sim
    sim.set_faults(tokenize_fail=False, tokenize_delay_s=0.0)


def test_a_request_that_certainly_fits_costs_no_tokenize_call(
    gateway: ThreadGateway, sim: SimHandle, key: str
) -> None:
    before = tokenize_calls(sim)
    assert usage(chat(gateway, key, max_tokens=5)) == (7, 5)
    assert usage(chat(gateway, key, max_completion_tokens=CAP - 400)) == (7, CAP - 400)
    assert tokenize_calls(sim) == before


def test_a_long_prompt_is_counted_by_the_engine(
    gateway: ThreadGateway, sim: SimHandle, key: str
) -> None:
    before = tokenize_calls(sim)
    prompt, completion = usage(chat(gateway, key, LONG, max_tokens=200))
    assert (prompt, completion) == (PROMPT, 200)
    assert tokenize_calls(sim) == before + 1
    # The largest request that fits, exactly at the cap.
    prompt, completion = usage(chat(gateway, key, LONG, max_tokens=CAP - PROMPT))
    assert prompt + completion == CAP


def test_a_prompt_at_or_over_the_cap_is_refused(gateway: ThreadGateway, key: str) -> None:
    error = assert_error(chat(gateway, key, "w" * 4000), 400, "context_length_exceeded")
    assert error["param"] == "messages" and error["type"] == "invalid_request_error"
    assert "1006 tokens" in str(error["message"]) and f"cap of {CAP}" in str(error["message"])
    error = assert_error(complete(gateway, key, "w" * 4000), 400, "context_length_exceeded")
    assert error["param"] == "prompt" and "1000 tokens" in str(error["message"])


def test_token_ids_are_counted_without_the_engine(
    gateway: ThreadGateway, sim: SimHandle, key: str
) -> None:
    before = tokenize_calls(sim)
    error = assert_error(complete(gateway, key, [7] * 1200), 400, "context_length_exceeded")
    assert "1200 tokens" in str(error["message"])
    assert tokenize_calls(sim) == before


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_asking_for_more_than_is_left_is_refused(
    gateway: ThreadGateway, key: str, field: str
) -> None:
    response = chat(gateway, key, LONG, **{field: CAP - PROMPT + 1})
    error = assert_error(response, 400, "context_length_exceeded")
    assert error["param"] == field
    message = str(error["message"])
    assert f"({PROMPT} tokens)" in message and f"is {CAP + 1} tokens" in message
    assert f"at most {CAP - PROMPT}" in message


def test_without_max_tokens_the_engine_stops_at_the_cap(gateway: ThreadGateway, key: str) -> None:
    prompt, completion = usage(chat(gateway, key, LONG))
    assert prompt == PROMPT and prompt + completion == CAP
    prompt, completion = usage(complete(gateway, key, "w" * 3000))
    assert prompt == 750 and prompt + completion == CAP
    # Streamed: the usage chunk the client asked for says the same.
    response = chat(gateway, key, LONG, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
    final = orjson.loads(events[-1])["usage"]
    assert final["prompt_tokens"] + final["completion_tokens"] == CAP


def test_the_tenants_max_tokens_still_applies_under_the_cap(
    gateway: ThreadGateway, sim: SimHandle
) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "both-caps", max_context_tokens=CAP, max_tokens=100)
    before = tokenize_calls(sim)
    assert usage(chat(gateway, key)) == (7, 100)  # fits for certain: filled without a count
    assert tokenize_calls(sim) == before
    assert usage(chat(gateway, key, LONG)) == (PROMPT, 100)  # min(cap - prompt, max_tokens)
    assert tokenize_calls(sim) == before + 1
    assert_error(chat(gateway, key, max_tokens=101), 400, "max_tokens_exceeded")


def test_the_models_own_context_bounds_the_filled_in_max_tokens(gateway: ThreadGateway) -> None:
    with gateway.admin() as admin:
        key = new_tenant(admin, "roomy", max_context_tokens=40_000)
    # 32,506 prompt tokens; the simulator's max_model_len is 32,768, below the tenant's cap.
    prompt, completion = usage(chat(gateway, key, "w" * 130_000))
    assert (prompt, prompt + completion) == (32_506, 32_768)


def test_clearing_the_cap_through_the_api(gateway: ThreadGateway, sim: SimHandle, key: str) -> None:
    with gateway.admin() as admin:
        assert admin.get("/api/tenants/capped").json()["max_context_tokens"] == CAP
        new_tenant(admin, "to-clear", max_context_tokens=CAP)
        uncapped = admin.post("/api/keys", json={"tenant": "to-clear"}).json()["key"]
        assert_error(chat(gateway, uncapped, "w" * 4000), 400, "context_length_exceeded")
        cleared = admin.patch("/api/tenants/to-clear", json={"max_context_tokens": None})
        assert cleared.status_code == 200 and cleared.json()["max_context_tokens"] is None
        assert_error(
            admin.patch("/api/tenants/to-clear", json={"max_context_tokens": 0}),
            422,
            "invalid_value",
        )
    before = tokenize_calls(sim)
    assert usage(chat(gateway, uncapped, "w" * 4000, max_tokens=3)) == (1006, 3)
    assert tokenize_calls(sim) == before


def test_a_failing_tokenize_is_503_never_a_silent_pass(
    gateway: ThreadGateway, sim_faults: SimHandle, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim_faults.set_faults(tokenize_fail=True)
    error = assert_error(chat(gateway, key, LONG, max_tokens=5), 503, "engine_unavailable")
    assert "context cap cannot be checked" in str(error["message"])
    assert "HTTP 500" in str(error["message"]) and "127.0.0.1" not in str(error["message"])
    assert usage(chat(gateway, key, max_tokens=5)) == (7, 5)  # no count needed: still served
    sim_faults.set_faults(tokenize_fail=False, tokenize_delay_s=2.0)
    monkeypatch.setattr(context_cap, "TOKENIZE_TIMEOUT", 0.3)
    started = time.monotonic()
    error = assert_error(chat(gateway, key, LONG), 503, "engine_unavailable")
    assert "no answer within 0.3 s" in str(error["message"])
    assert time.monotonic() - started < 1.5


def test_refusals_are_audited(gateway: ThreadGateway, sim_faults: SimHandle, key: str) -> None:
    assert chat(gateway, key, "w" * 4000).status_code == 400
    sim_faults.set_faults(tokenize_fail=True)
    assert chat(gateway, key, LONG).status_code == 503
    time.sleep(0.3)  # api.completion is written after the last byte
    done = [f for kind, tenant, f in entries(gateway.settings.data_dir)
            if kind == "api.completion" and tenant == "capped"]  # fmt: skip
    outcomes = [(f["outcome"], f["status"]) for f in done[-2:]]
    assert outcomes == [("refused", 400), ("engine_error", 503)]
    assert done[-1]["prompt_tokens"] == 0 and done[-1]["engine"] is None  # never reached it


def test_cli_sets_and_clears_the_cap_of_a_running_gateway(gateway: ThreadGateway) -> None:
    data_dir = gateway.settings.data_dir
    created = sparkplane(data_dir, "tenants", "create", "by-cli", "--max-context-tokens", "1000")
    assert created.returncode == 0, created.stderr
    assert "max_context_tokens=1000" in created.stdout
    listed = sparkplane(data_dir, "tenants", "list").stdout.splitlines()
    assert any(line.startswith("by-cli\t") and "max_context_tokens=1000" in line for line in listed)
    key = sparkplane(data_dir, "keys", "create", "--tenant", "by-cli").stdout.splitlines()[-1]
    assert_error(chat(gateway, key, "w" * 4000), 400, "context_length_exceeded")
    updated = sparkplane(data_dir, "tenants", "update", "by-cli", "--max-context-tokens", "0")
    assert updated.returncode == 0, updated.stderr
    assert "max_context_tokens=-" in updated.stdout
    assert usage(chat(gateway, key, "w" * 4000, max_tokens=2)) == (1006, 2)
    refused = sparkplane(data_dir, "tenants", "update", "by-cli", "--max-context-tokens", "-5")
    assert refused.returncode == 1 and "max_context_tokens" in refused.stderr
