"""vLLM's `POST /tokenize` (served at the root, next to /health): the prompt's token count.

Chat bodies (`messages`) and completion bodies (`prompt`) are counted exactly as the generation
routes count them for `usage.prompt_tokens`, so `count` here equals the usage of the same prompt.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .control import error_response, json_response, read_json
from .engine import SimEngine
from .parse import check_model, prompt_tokens
from .shapes import BadRequest, error_body


def tokenize_routes(engine: SimEngine) -> list[web.RouteDef]:
    async def tokenize(request: web.Request) -> web.Response:
        engine.counters.tokenize_requests += 1
        faults = engine.faults
        if faults.tokenize_delay_s:
            await asyncio.sleep(faults.tokenize_delay_s)
        if faults.tokenize_fail:
            status = faults.error_status
            failure = error_body("simulated tokenizer failure", status)
            return web.Response(body=failure, status=status, content_type="application/json")
        try:
            body = await read_json(request)
            check_model(body, engine.opts)
            count = prompt_tokens(body, chat="messages" in body)
        except BadRequest as exc:
            return error_response(exc)
        return json_response(
            {"count": count, "max_model_len": engine.opts.max_model_len, "tokens": [*range(count)]}
        )

    return [web.post("/tokenize", tokenize)]
