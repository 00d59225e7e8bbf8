"""The application class: the relayed OpenAI routes go straight to the relay.

The relayed routes are the hot path; FastAPI's middleware stack (its error, telemetry and
body-limit layers), routing and dependency solving cost more CPU per request than the whole
relay. `ControlPlaneApp` hands those requests to the same `relay` that the FastAPI routes use,
before any of that, so behaviour and OpenAPI documentation stay the same. What the skipped
error middleware did for them is done here: an unexpected exception is logged and, if nothing
was sent yet, answered with the one error shape (500).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive, Scope, Send

from controlplane.api.errors import ApiError, error_response, internal_error
from controlplane.api.routes.openai import RELAYED, relay

log = logging.getLogger(__name__)


class ControlPlaneApp(FastAPI):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = RELAYED.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            try:
                response = await relay(Request(scope, receive, send), endpoint)
            except ApiError as exc:
                response = error_response(exc)
            await response(scope, receive, tracked_send)
        except ClientDisconnect:
            return  # gone while its body was read: nobody to answer
        except Exception:
            log.exception("unexpected error on POST %s", scope["path"])
            if not started:
                await error_response(internal_error())(scope, receive, send)
