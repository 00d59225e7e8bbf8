"""A tenant's context cap: prompt tokens + completion tokens of one request <= max_context_tokens.
A request with `n` choices has n completions: it is held to prompt + n x max_tokens.

Prompt tokens are counted by the engine itself (vLLM's `POST /tokenize`, with the model's own
tokenizer and chat template), so the count is the one the engine will bill in `usage`. A request
that certainly fits needs no count: a byte-level tokenizer never makes more tokens than the text
has bytes, and the raw JSON body is longer than the text, so `len(body) + TEMPLATE_MARGIN +
completion budget <= cap` proves it. Otherwise:

- prompt >= cap: 400 `context_length_exceeded`;
- the client's `max_tokens`/`max_completion_tokens` would pass the cap: 400
  `context_length_exceeded`;
- the client gave neither: `max_tokens` is set to what is left (at most the tenant's
  `max_tokens` and the engine's `max_model_len`), so the engine stops at the cap.

If the engine cannot count (down, timeout, an error), the answer is 503 `engine_unavailable`:
a cap that cannot be checked is not waived.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from controlplane.engines.client import EngineConnectError, EngineHTTPError
from controlplane.engines.pool import Engine, EnginePool
from controlplane.gateway.errors import EngineUnavailable, InvalidRequest
from controlplane.tenancy.policy import TenantPolicy

log = logging.getLogger(__name__)

CAPPED_ENDPOINTS = frozenset({"chat/completions", "completions"})
TEMPLATE_MARGIN = 256  # tokens a chat template may add around the messages
TOKENIZE_TIMEOUT = 10.0  # seconds for one /tokenize call
# Fields of a chat request that change what the chat template renders (vLLM TokenizeChatRequest).
_CHAT_TEMPLATE_FIELDS = (
    "tools",
    "chat_template",
    "chat_template_kwargs",
    "add_generation_prompt",
    "continue_final_message",
    "add_special_tokens",
    "mm_processor_kwargs",
    "media_io_kwargs",
)


def token_count_field(body: dict[str, Any], name: str) -> int | None:
    """`body[name]` as a token count (None when absent); 400 unless a positive integer."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"'{name}' must be a positive integer", param=name)
    return value


def requested_completion(body: dict[str, Any], chat: bool) -> tuple[str, int] | None:
    """(field, value) of the completion budget the client asked for, as the engine reads it."""
    names = ("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)
    for name in names:
        value = token_count_field(body, name)
        if value is not None:
            return name, value
    return None


async def enforce_context_cap(
    body: dict[str, Any],
    tenant: TenantPolicy,
    pool: EnginePool,
    endpoint: str,
    raw: bytes,
    sequences: int = 1,
) -> bool:
    """Refuse (InvalidRequest, EngineUnavailable) or complete the request under the tenant's
    cap, counting `sequences` (n) completions; True if the body changed."""
    cap = tenant.max_context_tokens
    if cap is None or endpoint not in CAPPED_ENDPOINTS:
        return False
    chat = endpoint == "chat/completions"
    given = requested_completion(body, chat)
    budget = given[1] if given is not None else tenant.max_tokens
    if budget is not None and len(raw) + TEMPLATE_MARGIN + sequences * budget <= cap:
        if given is None:
            body["max_tokens"] = budget
            return True
        return False
    prompt, model_len = await count_prompt(body, chat, pool)
    if prompt >= cap:
        raise InvalidRequest(
            f"the prompt is {prompt} tokens, at or above this tenant's context cap of {cap} "
            "tokens (prompt + completion)",
            code="context_length_exceeded",
            param="messages" if chat else "prompt",
        )
    if given is not None:
        name, value = given
        if prompt + sequences * value > cap:
            times = f"{sequences} x " if sequences > 1 else ""
            raise InvalidRequest(
                f"the prompt ({prompt} tokens) plus {times}'{name}' ({value}) is "
                f"{prompt + sequences * value} tokens, above this tenant's context cap of "
                f"{cap}; ask for at most {(cap - prompt) // sequences}",
                code="context_length_exceeded",
                param=name,
            )
        return False
    room = min((cap - prompt) // sequences, (model_len or cap) - prompt)
    if room < 1:
        if sequences > 1 and prompt < cap:  # fits once, not n times
            message = f"the prompt ({prompt} tokens) leaves no room for {sequences} choices"
            raise InvalidRequest(message, code="context_length_exceeded", param="n")
        return False  # longer than the model's own context: the engine refuses it itself
    if tenant.max_tokens is not None:
        room = min(room, tenant.max_tokens)
    body["max_tokens"] = room
    return True


async def count_prompt(body: dict[str, Any], chat: bool, pool: EnginePool) -> tuple[int, int]:
    """(prompt tokens, the engine's max_model_len or 0) as the engine counts them."""
    model = body["model"]
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty list", param="messages")
        payload = {"model": model, "messages": messages, "add_generation_prompt": True}
        payload.update({k: body[k] for k in _CHAT_TEMPLATE_FIELDS if k in body})
        return await tokenize(pool, model, payload)
    prompt = body.get("prompt")
    batch = prompt if isinstance(prompt, list) and not _is_token_ids(prompt) else [prompt]
    if not batch:
        raise InvalidRequest("'prompt' must not be empty", param="prompt")
    counts: list[tuple[int, int]] = []
    texts = []
    for item in batch:
        if isinstance(item, list) and item and _is_token_ids(item):
            counts.append((len(item), 0))  # token ids: nothing to count at the engine
        elif isinstance(item, str):
            texts.append(item)
        else:
            message = "'prompt' must be a string, a list of token ids, or a list of those"
            raise InvalidRequest(message, param="prompt")
    extra = (
        {"add_special_tokens": body["add_special_tokens"]} if "add_special_tokens" in body else {}
    )
    payloads = [{"model": model, "prompt": text, **extra} for text in texts]
    counts += await asyncio.gather(*(tokenize(pool, model, p) for p in payloads))
    return max(c for c, _ in counts), max(m for _, m in counts)


def _is_token_ids(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(t, int) and not isinstance(t, bool) for t in items)


async def tokenize(pool: EnginePool, model: str, payload: dict[str, Any]) -> tuple[int, int]:
    """POST /tokenize to the least busy healthy engine serving `model` (the next one if it
    cannot be connected to); returns (count, max_model_len or 0)."""
    engines = sorted(
        (e for e in pool.engines if e.healthy and e.serves(model)), key=lambda e: e.in_flight
    )
    if not engines:
        raise EngineUnavailable("no engine is healthy")
    data = orjson.dumps(payload)
    for engine in engines:
        try:
            return await _post_tokenize(engine, data)
        except EngineConnectError as exc:
            pool.mark_failed(engine, str(exc))
    raise EngineUnavailable("the engine cannot be reached to count the prompt's tokens; try again")


async def _post_tokenize(engine: Engine, data: bytes) -> tuple[int, int]:
    headers = {"Content-Type": "application/json"}
    path = engine.root_path + "/tokenize"
    try:
        response = await engine.client.request(
            "POST", path, data, headers, time_limit=TOKENIZE_TIMEOUT
        )
        try:
            status, answer = response.status, await response.read()
        finally:
            response.close()
    except EngineConnectError:
        raise
    except TimeoutError as exc:
        raise _failed(engine, f"no answer within {TOKENIZE_TIMEOUT:g} s", exc) from None
    except EngineHTTPError as exc:
        raise _failed(engine, "the connection broke off", exc) from None
    if status in (400, 422):
        # The engine's tokenizer or chat template refused the prompt: the client's to fix.
        raise InvalidRequest(f"the engine could not tokenize the prompt: {_engine_message(answer)}")
    if status != 200:
        raise _failed(engine, f"its /tokenize answered HTTP {status}", answer[:200])
    try:
        parsed = orjson.loads(answer)
        count, model_len = parsed["count"], parsed.get("max_model_len") or 0
        if not isinstance(count, int) or not isinstance(model_len, int) or count < 0:
            raise TypeError(f"count {count!r}, max_model_len {model_len!r}")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _failed(engine, "its /tokenize gave no token count", exc) from None
    return count, model_len


def _failed(engine: Engine, reason: str, detail: object) -> EngineUnavailable:
    """The client's 503 (no engine address in it); the detail goes to the log."""
    log.warning("context cap: /tokenize at %s failed: %s (%s)", engine.url, reason, detail)
    message = (
        "this tenant's context cap cannot be checked: the engine did not count the prompt's "
        f"tokens ({reason}); try again"
    )
    return EngineUnavailable(message)


def _engine_message(answer: bytes) -> str:
    try:
        parsed = orjson.loads(answer)
        error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        message = error.get("message") if isinstance(error, dict) else None
        return str(message or parsed)[:500]
    except ValueError:
        return answer[:500].decode(errors="replace")
