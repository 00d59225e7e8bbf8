"""The functional checks of `sparkplane validate`: each passes or fails, none is a matter of speed.

Every check is one function of a `CheckContext` that raises `CheckFailed` (or CallFailed) with
what it saw; `run_check` turns that into a `CheckResult` for the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from installer.lifecycle.validate_client import CallFailed, Target, request_json, stream_chat

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather in a city",
                 "parameters": WEATHER_SCHEMA},
}  # fmt: skip
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}
HELLO = [{"role": "user", "content": "Say hello to the auditors."}]


class CheckFailed(RuntimeError):
    """The check ran and the appliance answered wrongly; the message says how."""


@dataclass(frozen=True)
class CheckContext:
    gateway: Target  # the control plane with the system tenant's key
    model: str
    wrong_key: Target  # the control plane with a key that does not exist
    capped: Target | None  # a tenant with concurrency 1 and no queue: its 2nd call gets 429
    verify_audit: Callable[[], str]  # raises CheckFailed unless the chain verifies


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str
    seconds: float


def _chat(ctx: CheckContext, max_tokens: int = 32, **extra: Any) -> dict[str, Any]:
    body = {"model": ctx.model, "messages": HELLO, "max_tokens": max_tokens, "temperature": 0}
    answer: dict[str, Any] = request_json(ctx.gateway, "POST", "/v1/chat/completions", body | extra)
    if not answer.get("choices"):
        raise CheckFailed(f"an answer without choices: {str(answer)[:200]}")
    return answer


def _message(answer: dict[str, Any]) -> dict[str, Any]:
    return answer["choices"][0].get("message") or {}


def _conforms(value: Any, schema: dict[str, Any]) -> bool:
    """The subset of JSON Schema the checks use: an object, required keys, string properties."""
    if not isinstance(value, dict) or not all(key in value for key in schema["required"]):
        return False
    properties = schema["properties"]
    if schema.get("additionalProperties") is False and set(value) - set(properties):
        return False
    return all(isinstance(value[k], str) for k in properties if k in value)


def models_listed(ctx: CheckContext) -> str:
    listed = [m.get("id") for m in request_json(ctx.gateway, "GET", "/v1/models")["data"]]
    if ctx.model not in listed:
        raise CheckFailed(f"{ctx.model} is not among the listed models {listed}")
    return f"{len(listed)} model(s): {', '.join(map(str, listed))}"


def plain_completion(ctx: CheckContext) -> str:
    answer = _chat(ctx, max_tokens=8)
    usage = answer.get("usage") or {}
    if not usage.get("completion_tokens"):
        raise CheckFailed(f"no completion tokens counted: {usage}")
    return f"{usage['completion_tokens']} tokens"


def streamed_completion(ctx: CheckContext) -> str:
    body = {"model": ctx.model, "messages": HELLO, "max_tokens": 8, "temperature": 0}
    timing, chunks = stream_chat(ctx.gateway, body)
    if timing.completion_tokens < 1 or len(chunks) < 2:
        raise CheckFailed(f"{len(chunks)} chunks, {timing.completion_tokens} tokens")
    return f"{len(chunks)} chunks, first token after {timing.ttft * 1000:.0f} ms"


def forced_tool_call(ctx: CheckContext) -> str:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    answer = _chat(ctx, 60, messages=ask, tools=[WEATHER_TOOL], tool_choice=forced)
    calls = _message(answer).get("tool_calls") or []
    if len(calls) != 1 or calls[0]["function"]["name"] != "get_weather":
        raise CheckFailed(f"expected one call of get_weather, got {calls}")
    arguments = json.loads(calls[0]["function"]["arguments"])
    if not _conforms(arguments, WEATHER_SCHEMA):
        raise CheckFailed(f"arguments do not match the schema: {arguments}")
    return f"get_weather({json.dumps(arguments)})"


def json_schema_output(ctx: CheckContext) -> str:
    describe = [{"role": "user", "content": "Describe Rome as JSON."}]
    schema = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY_SCHEMA}}
    content = _message(_chat(ctx, 60, messages=describe, response_format=schema)).get("content")
    try:
        value = json.loads(content or "")
    except ValueError as exc:
        raise CheckFailed(f"not JSON: {content!r}") from exc
    if not _conforms(value, CITY_SCHEMA):
        raise CheckFailed(f"does not match the schema: {value}")
    return json.dumps(value)


def _reasoning(message: dict[str, Any]) -> str:
    return str(message.get("reasoning") or message.get("reasoning_content") or "")


def reasoning_on_and_off(ctx: CheckContext) -> str:
    thinking = {"chat_template_kwargs": {"enable_thinking": True}}
    on = _message(_chat(ctx, 60, **thinking))
    off = _message(_chat(ctx, 60))
    if not _reasoning(on) or not on.get("content"):
        raise CheckFailed(f"asked to reason, answered {on}")
    if _reasoning(off) or not off.get("content"):
        raise CheckFailed(f"not asked to reason, answered {off}")
    return f"reasoning of {len(_reasoning(on))} characters when asked, none otherwise"


def over_cap_gets_429(ctx: CheckContext) -> str:
    """The capped tenant holds one stream open; its second call must be refused with 429."""
    if ctx.capped is None:
        raise CheckFailed("no capped tenant to test with")
    body = {"model": ctx.model, "messages": HELLO, "max_tokens": 64, "stream": True,
            "temperature": 0, "ignore_eos": True}  # fmt: skip
    holder = ctx.capped.connect()
    try:
        holder.request("POST", "/v1/chat/completions", json.dumps(body), ctx.capped.headers())
        response = holder.getresponse()
        if response.status != 200:
            raise CheckFailed(f"the first call was refused: HTTP {response.status}")
        response.readline()  # the stream has started: the tenant's one slot is taken
        try:
            request_json(ctx.capped, "POST", "/v1/chat/completions", body | {"stream": False})
        except CallFailed as exc:
            if exc.status == 429:
                return f"second call refused: {exc}"
            raise CheckFailed(f"expected 429, got {exc}") from exc
        raise CheckFailed("a call over the tenant's concurrency cap was served")
    finally:
        holder.close()


def wrong_key_gets_401(ctx: CheckContext) -> str:
    try:
        request_json(ctx.wrong_key, "GET", "/v1/models")
    except CallFailed as exc:
        if exc.status == 401:
            return "refused with 401"
        raise CheckFailed(f"expected 401, got {exc}") from exc
    raise CheckFailed("a key that does not exist was accepted")


def audit_chain_verifies(ctx: CheckContext) -> str:
    return ctx.verify_audit()


# In the order they run; the audit check last, so that it covers every call made before it.
CHECKS: list[tuple[str, Callable[[CheckContext], str]]] = [
    ("models listed", models_listed),
    ("plain completion", plain_completion),
    ("streamed completion", streamed_completion),
    ("forced tool call, schema-valid arguments", forced_tool_call),
    ("JSON-schema output", json_schema_output),
    ("reasoning on and off", reasoning_on_and_off),
    ("over a tenant's cap: 429", over_cap_gets_429),
    ("wrong key: 401", wrong_key_gets_401),
]
FINAL_CHECK = ("audit chain verifies", audit_chain_verifies)


def run_check(name: str, check: Callable[[CheckContext], str], ctx: CheckContext) -> CheckResult:
    started = time.monotonic()
    try:
        detail, passed = check(ctx), True
    except (CheckFailed, CallFailed) as exc:
        detail, passed = str(exc), False
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        detail, passed = f"unexpected answer: {type(exc).__name__}: {exc}", False
    return CheckResult(name, passed, detail, round(time.monotonic() - started, 3))
