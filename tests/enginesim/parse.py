"""Validate OpenAI request bodies and turn them into a generation `Plan`."""

from __future__ import annotations

from typing import Any

from .model import SimOptions, chat_prompt_tokens, text_tokens
from .shapes import BadRequest, Plan, output_pieces


def _int_field(body: dict[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadRequest(f"{name} must be an integer >= {minimum}, got {value!r}", param=name)
    return value


def check_model(body: dict[str, Any], opts: SimOptions) -> str:
    model = body.get("model")
    if model is None:  # vLLM falls back to the first served model
        return opts.models[0]
    if model not in opts.models:
        raise BadRequest(f"The model `{model}` does not exist.", status=404, param="model")
    return str(model)


def stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage) after validation."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object", param="stream_options")
    if options and not stream:
        raise BadRequest(
            "stream_options can only be set when stream is true", param="stream_options"
        )
    return stream, bool(options.get("include_usage", False))


def prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    """Prompt tokens of a chat or completion body: `usage.prompt_tokens` and /tokenize's count."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list", param="messages")
        if not all(isinstance(m, dict) and "role" in m for m in messages):
            raise BadRequest("every message must be an object with a role", param="messages")
        try:
            return chat_prompt_tokens(messages)
        except ValueError as exc:
            raise BadRequest(str(exc), param="messages") from exc
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return max(text_tokens(prompt), 1)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)  # token ids
    raise BadRequest(
        "prompt must be a string or a list of token ids (one prompt per request)", param="prompt"
    )


def build_plan(body: dict[str, Any], opts: SimOptions, chat: bool) -> Plan:
    model = check_model(body, opts)
    n = _int_field(body, "n", 1) or 1
    prompt_count = prompt_tokens(body, chat)
    names = ("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)
    limits = [v for v in (_int_field(body, n, 1) for n in names) if v is not None]
    room = opts.max_model_len - prompt_count
    if room < 1 or (limits and limits[0] > room):
        raise BadRequest(
            f"This model's maximum context length is {opts.max_model_len} tokens. However, "
            f"you requested {prompt_count + (limits[0] if limits else 0)} tokens "
            f"({prompt_count} in the messages, {limits[0] if limits else 0} in the completion).",
            param="max_tokens",
        )
    max_tokens = limits[0] if limits else min(opts.default_max_tokens, room)
    natural = opts.output_tokens
    ignore_eos = body.get("ignore_eos") is True
    count = max_tokens if natural is None or ignore_eos else min(natural, max_tokens)
    finish = "length" if count == max_tokens else "stop"
    pieces, tool_call = output_pieces(body, count) if chat else output_pieces({}, count)
    reasoning = 0
    if tool_call is not None:
        finish = "tool_calls"
    elif chat and body.get("response_format") is None:
        reasoning = min(opts.reasoning_tokens, count)  # like a --reasoning-parser engine
        thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking")
        if isinstance(thinking, bool):  # asked explicitly: think (half the answer) or not
            reasoning = min(opts.reasoning_tokens or count // 2, count - 1) if thinking else 0
    return Plan(
        chat=chat,
        model=model,
        prompt_tokens=prompt_count,
        pieces=pieces,
        finish_reason=finish,
        tool_call=tool_call,
        reasoning=reasoning,
        n=n,
    )


def tenant_of(body: dict[str, Any], header_value: str | None) -> str:
    """Who sent this: the gateway's tenant header, else the OpenAI `user` field, else "-"."""
    if header_value:
        return header_value
    user = body.get("user")
    return user if isinstance(user, str) and user else "-"


def priority_of(body: dict[str, Any]) -> int:
    """The request's place in a priority queue (vLLM: an integer, default 0, smaller first)."""
    value = body.get("priority", 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest("priority must be an integer", param="priority")
    return value


def embedding_inputs(body: dict[str, Any]) -> list[str]:
    raw = body.get("input")
    items: list[Any] = raw if isinstance(raw, list) else [raw]
    if raw is None or (isinstance(raw, list) and not raw):
        raise BadRequest("input must be a string or a non-empty list", param="input")
    if items and all(isinstance(t, int) for t in items):
        return [repr(items)]  # one prompt given as token ids
    out = []
    for item in items:
        if isinstance(item, str) or (
            isinstance(item, list) and all(isinstance(t, int) for t in item)
        ):
            out.append(item if isinstance(item, str) else repr(item))
        else:
            raise BadRequest("input items must be strings or lists of token ids", param="input")
    return out
