"""Content capture of one call, for a tenant with `capture_content` on.

`RelayCall` makes a `CallCapture` only for such a tenant (no cost for the others): a plain
answer's body is kept as it is, a stream's relayed events are appended as bytes. Everything is
parsed and reassembled once, off the event loop, when the call is recorded: the text of each
choice, its reasoning and its tool calls (their argument pieces joined by index), as
`audit/captured.py` seals it.
"""

from __future__ import annotations

from typing import Any

import orjson

from controlplane.audit.captured import ContentStore


class CallCapture:
    def __init__(self, store: ContentStore, endpoint: str, model: str, raw: bytes) -> None:
        self.store = store
        self.endpoint = endpoint
        self.model = model
        self._raw = raw  # the body as the client sent it
        self._events: list[bytes] = []
        self._answer: bytes | None = None
        self.streamed = False

    def feed(self, events: bytes) -> None:
        """Complete SSE events as relayed to the client."""
        self.streamed = True
        self._events.append(events)

    def answer(self, body: bytes) -> None:
        """A plain answer's body (status 200)."""
        self._answer = body

    async def seal(self, tenant: str, request_id: str, finished: bool) -> str:
        """Store the sealed record; returns the `content_sha256` for the completion entry."""
        return await self.store.add(tenant, request_id, lambda: self.record(finished))

    def record(self, finished: bool) -> dict[str, Any]:
        """The captured record (`CAPTURED_FIELDS`)."""
        try:
            request = orjson.loads(self._raw)
        except orjson.JSONDecodeError:
            request = self._raw.decode(errors="replace")
        if self.streamed:
            choices = stream_choices(b"".join(self._events))
        elif self._answer is not None:
            choices = answer_choices(self._answer)
        else:
            choices = []
        return {
            "endpoint": self.endpoint,
            "model": self.model,
            "stream": self.streamed,
            "request": request,
            "choices": choices,
            "finished": finished,
        }


def _choice(index: int) -> dict[str, Any]:
    return {"index": index, "text": None, "reasoning": None, "tool_calls": [],
            "finish_reason": None}  # fmt: skip


def _append(choice: dict[str, Any], field: str, piece: Any) -> None:
    if isinstance(piece, str) and piece:
        choice[field] = (choice[field] or "") + piece


def answer_choices(body: bytes) -> list[dict[str, Any]]:
    """Choices of a plain chat or completions answer (none for embeddings)."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    choices = []
    for position, raw in enumerate(answer.get("choices") or [] if isinstance(answer, dict) else []):
        choice = _choice(int(raw.get("index", position)))
        message = raw.get("message") or {}
        _append(choice, "text", message.get("content") if message else raw.get("text"))
        _append(choice, "reasoning", message.get("reasoning") or message.get("reasoning_content"))
        choice["tool_calls"] = [_tool_call(call) for call in message.get("tool_calls") or []]
        choice["finish_reason"] = raw.get("finish_reason")
        choices.append(choice)
    return choices


def stream_choices(events: bytes) -> list[dict[str, Any]]:
    """Reassemble the choices of a chat or completions stream from its SSE events."""
    choices: dict[int, dict[str, Any]] = {}
    for event in events.split(b"\n\n"):
        event = event.strip()
        if not event.startswith(b"data:") or event[5:].strip() == b"[DONE]":
            continue
        try:
            chunk = orjson.loads(event[5:])
        except orjson.JSONDecodeError:
            continue
        for raw in chunk.get("choices") or [] if isinstance(chunk, dict) else []:
            index = int(raw.get("index", 0))
            choice = choices.setdefault(index, _choice(index))
            delta = raw.get("delta")
            if isinstance(delta, dict):
                _append(choice, "text", delta.get("content"))
                _append(choice, "reasoning", delta.get("reasoning"))
                _append(choice, "reasoning", delta.get("reasoning_content"))
                for piece in delta.get("tool_calls") or []:
                    _merge_tool_call(choice["tool_calls"], piece)
            else:
                _append(choice, "text", raw.get("text"))
            if raw.get("finish_reason"):
                choice["finish_reason"] = raw["finish_reason"]
    return [choices[index] for index in sorted(choices)]


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"id": call.get("id"), "type": call.get("type", "function"),
            "name": function.get("name"), "arguments": function.get("arguments") or ""}  # fmt: skip


def _merge_tool_call(calls: list[dict[str, Any]], piece: dict[str, Any]) -> None:
    """A streamed tool call comes in pieces with the same `index`; the arguments are joined."""
    index = int(piece.get("index", len(calls)))
    while len(calls) <= index:
        calls.append({"id": None, "type": "function", "name": None, "arguments": ""})
    call, function = calls[index], piece.get("function") or {}
    call["id"] = call["id"] or piece.get("id")
    call["type"] = piece.get("type") or call["type"]
    call["name"] = call["name"] or function.get("name")
    call["arguments"] += function.get("arguments") or ""
