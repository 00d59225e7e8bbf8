"""JSON helpers and the /sim/* control routes a test or benchmark uses to read and steer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from aiohttp import web

from .engine import SimEngine
from .shapes import BadRequest, error_body


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(exc: BadRequest) -> web.Response:
    return web.Response(
        body=error_body(str(exc), exc.status, exc.param),
        status=exc.status,
        content_type="application/json",
    )


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def control_routes(
    engine: SimEngine, refuse_for: Callable[[float], Coroutine[Any, Any, None]]
) -> list[web.RouteDef]:
    """GET /sim/stats, POST /sim/reset, GET|POST /sim/faults."""

    async def stats(request: web.Request) -> web.Response:
        return json_response(engine.snapshot())

    async def reset(request: web.Request) -> web.Response:
        engine.reset()
        return json_response(engine.snapshot())

    async def get_faults(request: web.Request) -> web.Response:
        return json_response(engine.faults.as_dict())

    async def set_faults(request: web.Request) -> web.Response:
        try:
            engine.faults.update(await read_json(request))
        except ValueError as exc:  # BadRequest is a ValueError too
            return error_response(exc if isinstance(exc, BadRequest) else BadRequest(str(exc)))
        refuse = engine.faults.refuse_connections_s
        if refuse:
            engine.faults.refuse_connections_s = 0.0
            # Answer this request first, then stop listening.
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, lambda: loop.create_task(refuse_for(refuse)))
        return json_response(engine.faults.as_dict())

    return [
        web.get("/sim/stats", stats),
        web.post("/sim/reset", reset),
        web.get("/sim/faults", get_faults),
        web.post("/sim/faults", set_faults),
    ]
