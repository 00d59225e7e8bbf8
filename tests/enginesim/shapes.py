"""OpenAI/vLLM response bodies: plain responses, stream chunks, errors, embeddings."""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from .model import json_pieces, word_pieces


class BadRequest(ValueError):
    """A request the engine refuses; carries the HTTP status (400 or 404)."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


def error_body(message: str, status: int, param: str | None = None) -> bytes:
    """vLLM's error shape (OpenAI's nested `error` object)."""
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    error = {"message": message, "type": kind, "param": param, "code": status}
    return orjson.dumps({"error": error})


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@dataclass
class Plan:
    """What one generation request will produce."""

    chat: bool
    model: str
    prompt_tokens: int
    pieces: list[str]  # one entry per output token
    finish_reason: str
    tool_call: dict[str, Any] | None = None  # {"name": ...} when the answer is a tool call
    reasoning: int = 0  # leading pieces that are reasoning (vLLM's `reasoning` field)
    n: int = 1  # choices: `n` identical sequences, each counted in usage (like vLLM's)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + self.id

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {"id": self.response_id, "object": obj, "created": self.created, "model": self.model}

    def _tool_calls(self, arguments: str) -> list[dict[str, Any]]:
        assert self.tool_call is not None
        return [
            {
                "id": "chatcmpl-tool-" + self.id[:16],
                "type": "function",
                "function": {"name": self.tool_call["name"], "arguments": arguments},
            }
        ]

    def full_response(self, generated: int) -> dict[str, Any]:
        thought = min(self.reasoning, generated)
        text = "".join(self.pieces[thought:generated])
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text, "tool_calls": []}
            if self.reasoning:
                message["reasoning"] = "".join(self.pieces[:thought])
            if self.tool_call is not None:
                message.update(content=None, tool_calls=self._tool_calls(text))
            choice: dict[str, Any] = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }
            body = self._envelope("chat.completion")
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }
            body = self._envelope("text_completion")
        body["choices"] = [{**choice, "index": i} for i in range(self.n)]
        body["usage"] = usage(self.prompt_tokens, generated * self.n)
        return body

    def chunk(self, index: int, last: bool) -> bytes:
        """SSE event for output token `index` (the last one carries finish_reason)."""
        piece = self.pieces[index]
        finish = self.finish_reason if last else None
        if self.chat:
            delta: dict[str, Any] = {"reasoning" if index < self.reasoning else "content": piece}
            if self.tool_call is not None:
                call = self._tool_calls(piece)[0]
                if index:  # later deltas carry only the argument text, like vLLM/OpenAI
                    call = {"function": {"arguments": piece}}
                delta = {"tool_calls": [{"index": 0, **call}]}
            if index == 0:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish,
            }
            body = self._envelope("chat.completion.chunk")
        else:
            choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}
            body = self._envelope("text_completion")
        body["choices"] = [{**choice, "index": i} for i in range(self.n)]
        return sse(body)

    def usage_chunk(self, generated: int) -> bytes:
        body = self._envelope("chat.completion.chunk" if self.chat else "text_completion")
        body["choices"] = []
        body["usage"] = usage(self.prompt_tokens, generated * self.n)
        return sse(body)


def sse(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def schema_pieces(schema: Any) -> list[str] | None:
    """An object with every required property set to "sim", as guided decoding would make one
    for a schema of string properties (None for any other schema)."""
    if not isinstance(schema, dict) or not schema.get("required"):
        return None
    properties = schema.get("properties") or {}
    required = schema["required"]
    if not all(properties.get(name, {}).get("type") == "string" for name in required):
        return None
    pieces = ["{"]
    for number, name in enumerate(required):
        pieces += [", " if number else "", orjson.dumps(name).decode(), ': "sim"']
    return [*[p for p in pieces if p], "}"]


def output_pieces(body: dict[str, Any], count: int) -> tuple[list[str], dict[str, Any] | None]:
    """The tokens a request yields: a tool call, a JSON object or plain words."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    if tools and choice != "none":
        if isinstance(choice, dict):
            name = choice.get("function", {}).get("name")
        else:
            name = tools[0].get("function", {}).get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("tools: every tool needs function.name", param="tools")
        # Always the whole arguments object: a cut tool call helps no test.
        tool = next((t for t in tools if t.get("function", {}).get("name") == name), tools[0])
        parameters = tool.get("function", {}).get("parameters")
        return schema_pieces(parameters) or ['{"', "sim", '": ', "true}"], {"name": name}
    response_format = body.get("response_format") or {}
    fmt = response_format.get("type")
    if fmt == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema_pieces(schema) or json_pieces(count), None
    if fmt == "json_object":
        return json_pieces(count), None
    return word_pieces(count), None


def embedding_vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for `text` (same input, same vector)."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [((seed[i % 32] + 31 * i) % 256) / 127.5 - 1.0 for i in range(dim)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [x / norm for x in raw]


def embedding_item(index: int, vector: list[float], encoding: str) -> dict[str, Any]:
    data: Any = vector
    if encoding == "base64":  # what the openai SDK asks for by default
        data = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return {"object": "embedding", "index": index, "embedding": data}
