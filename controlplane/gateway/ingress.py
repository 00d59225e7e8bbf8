"""How an inference call comes in: authenticated, read and checked, then run as a `RelayCall`.

`relay` is the one entry of a call; the FastAPI routes (`routes.py`) and the fast path both
only call it. The relayed routes are the hot path: FastAPI's middleware stack (its error,
telemetry and body-limit layers), routing and dependency solving cost more CPU per request than
the whole relay. `ControlPlaneApp` hands those requests to `relay` before any of that, so
behaviour and OpenAPI documentation stay the same. What the skipped error middleware did for
them is done here: an unexpected exception is logged and, if nothing was sent yet, answered
with the one error shape (500).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from controlplane.api.deps import tenant_key
from controlplane.api.errors import ApiError, error_response, internal_error, send_error
from controlplane.api.headers import add_security_headers, append_security_headers
from controlplane.gateway.call import GatewayServices, RelayCall
from controlplane.gateway.request import read_request

log = logging.getLogger(__name__)

# Path -> the engine's OpenAI endpoint. The routes of routes.py document and serve the same.
RELAYED = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


async def relay(scope: Scope, receive: Receive, send: Send, endpoint: str) -> None:
    """Serve one call of a tenant key to `endpoint`.

    A refused credential is answered here (and audited as `api.auth_failed` by `tenant_key`).
    A request with a valid key that the gateway refuses (bad JSON, disallowed model, too big)
    is still an API call of that tenant: the RelayCall answers it, with its api.request and
    api.completion audit entries like any other.
    """
    request = Request(scope, receive)
    try:
        principal = await tenant_key(request)
    except ApiError as refused:
        await send_error(send, refused)
        return
    services: GatewayServices = scope["app"].state.gateway
    settings = services.settings
    tenant = principal.tenant
    # A client gone while its body was read is a refusal too: audited, answered to nobody.
    checked = await read_request(
        request, tenant, services.engines, endpoint,
        max_bytes=settings.max_body_bytes, body_timeout=settings.body_timeout,
    )  # fmt: skip
    client = request.client.host if request.client else None
    call = RelayCall(
        services, principal, endpoint, client, checked.raw, checked.body,
        body_changed=checked.changed, demand=checked.demand, refusal=checked.refusal,
    )  # fmt: skip
    await call.run(receive, send)


def _with_security_headers(send: Send) -> Send:
    async def headed_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            add_security_headers(message)
        await send(message)

    return headed_send


class ControlPlaneApp(FastAPI):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        endpoint = RELAYED.get(scope["path"])
        if endpoint is None or scope["method"] != "POST":
            await super().__call__(scope, receive, _with_security_headers(send))
            return
        scope["app"] = self
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if not started:
                started = True
                append_security_headers(message)
            await send(message)

        try:
            await relay(scope, receive, tracked_send, endpoint)
        except Exception:
            log.exception("unexpected error on POST %s", scope["path"])
            if not started:  # (a stream under way was ended by the call, with an error event)
                await error_response(internal_error())(scope, receive, tracked_send)
