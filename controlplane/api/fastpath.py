"""A pure ASGI middleware that serves the relayed OpenAI routes without FastAPI's request cycle.

The relayed routes are the hot path; FastAPI's routing, dependency solving and exception
middleware cost more CPU per request than the whole relay. This middleware sits right behind
Starlette's outermost error middleware (which still turns any unexpected exception into the
one error shape) and hands those requests to the same `relay` that the FastAPI routes use, so
behaviour and OpenAPI documentation stay the same.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from controlplane.api.errors import ApiError, error_response
from controlplane.api.routes.openai import RELAYED, relay


class RelayFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = RELAYED.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            response = await relay(Request(scope, receive, send), endpoint)
        except ApiError as exc:
            response = error_response(exc)
        except ClientDisconnect:
            return  # gone while its body was read: nobody to answer
        await response(scope, receive, send)
