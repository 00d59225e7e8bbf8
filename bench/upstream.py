"""A minimal, fast OpenAI-compatible upstream for gateway-overhead benchmarks.

Raw ASGI on uvicorn (httptools + uvloop) with prebuilt bodies, so that nearly all the latency a
benchmark sees comes from the gateway under test. Streams send `max_tokens` chunks at
`--tokens-per-s` (default 50).

    python bench/upstream.py --port 9100 [--tokens-per-s 50]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvicorn

MODEL = "bench-model"
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

USAGE = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
CHAT_BODY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "a fixed answer of eight tokens here"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
)
MODELS_BODY = orjson.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}
)
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def chunk(content: str, finish: str | None) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


TOKEN_CHUNK = chunk(" tok", None)
LAST_CHUNK = chunk(" end", "stop")


def usage_chunk(tokens: int) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens},
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def make_app(tokens_per_s: float) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    interval = 1.0 / tokens_per_s

    async def respond(send: Send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": body})

    async def stream(send: Send, request: dict[str, Any]) -> None:
        tokens = int(request.get("max_tokens") or 16)
        with_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        due = time.monotonic()
        for index in range(tokens):
            if index:  # the first token goes out at once: TTFT is the gateway's alone
                due += interval
                await asyncio.sleep(max(due - time.monotonic(), 0))
            data = LAST_CHUNK if index == tokens - 1 else TOKEN_CHUNK
            await send({"type": "http.response.body", "body": data, "more_body": True})
        tail = (usage_chunk(tokens) if with_usage else b"") + b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": tail})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        if scope["method"] == "GET":
            if path in ("/health", "/healthz"):
                return await respond(send, 200, b"{}")
            if path == "/v1/models":
                return await respond(send, 200, MODELS_BODY)
        elif path in ("/v1/chat/completions", "/v1/completions"):
            request = orjson.loads(await read_body(receive))
            if request.get("stream"):
                return await stream(send, request)
            return await respond(send, 200, CHAT_BODY)
        await respond(send, 404, b'{"error": {"message": "not found", "code": 404}}')

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--tokens-per-s", type=float, default=50.0)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.tokens_per_s),
        host=args.host,
        port=args.port,
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
