"""The HTTP that `sparkplane validate` speaks: OpenAI calls, plain and streamed, with timings.

Standard library only (the installer's runtime has no HTTP client dependency): one
`http.client` connection per call, so concurrent streams are threads and each measures its own
time to first token and token rate. The same client talks to the control plane (with a key) and
straight to the engine (without), which is what makes the two sets of figures comparable.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class CallFailed(RuntimeError):
    """A call did not answer 2xx; `status` is the HTTP status (0: no answer at all)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


@dataclass(frozen=True)
class Target:
    """Where calls go: the control plane (key set) or the engine itself (no key)."""

    base_url: str  # scheme://127.0.0.1:port, without /v1
    key: str | None = None
    context: ssl.SSLContext | None = None
    timeout: float = 300.0

    def connect(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port
        if parts.scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self.context
            )
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.key is not None:
            headers["Authorization"] = f"Bearer {self.key}"
        return headers


@dataclass(frozen=True)
class StreamTiming:
    """One streamed completion as the client saw it."""

    started: float  # time.monotonic() when the request was sent
    first_token: float  # ... when the first content chunk arrived
    finished: float
    completion_tokens: int  # the engine's usage count
    prompt_tokens: int

    @property
    def ttft(self) -> float:
        return self.first_token - self.started

    @property
    def decode_tok_s(self) -> float:
        """Tokens after the first over the time after the first (the decode rate)."""
        span = self.finished - self.first_token
        return (
            (self.completion_tokens - 1) / span if span > 0 and self.completion_tokens > 1 else 0.0
        )


def _error_message(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return raw[:200].decode("utf-8", "replace")


def request_json(target: Target, method: str, path: str, body: Any = None) -> Any:
    """One call answered whole; CallFailed unless 2xx."""
    connection = target.connect()
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=target.headers())
        response = connection.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise CallFailed(0, f"{method} {path}: {exc}") from exc
    finally:
        connection.close()
    if not 200 <= response.status < 300:
        raise CallFailed(response.status, _error_message(raw))
    return json.loads(raw)


def stream_chat(target: Target, body: dict[str, Any]) -> tuple[StreamTiming, list[dict[str, Any]]]:
    """A streamed chat completion (usage asked for); its timing and every chunk parsed."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    connection = target.connect()
    chunks: list[dict[str, Any]] = []
    started = time.monotonic()
    first: float | None = None
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body), target.headers())
        response = connection.getresponse()
        if response.status != 200:
            raise CallFailed(response.status, _error_message(response.read()))
        for line in response:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            chunk = json.loads(payload)
            chunks.append(chunk)
            if first is None and any(_has_content(c) for c in chunk.get("choices") or []):
                first = time.monotonic()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise CallFailed(0, f"stream broke off: {exc}") from exc
    finally:
        connection.close()
    finished = time.monotonic()
    usage = next((c["usage"] for c in reversed(chunks) if c.get("usage")), None)
    if usage is None:
        raise CallFailed(0, "the stream ended without a usage chunk")
    timing = StreamTiming(
        started, first or finished, finished,
        int(usage.get("completion_tokens") or 0), int(usage.get("prompt_tokens") or 0),
    )  # fmt: skip
    return timing, chunks


def _has_content(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("reasoning") or delta.get("tool_calls"))
