"""The OpenAI-compatible API under /v1, relayed to the engines for a tenant key."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from controlplane.api.deps import ServicesDep, TenantKeyDep, tenant_key
from controlplane.api.errors import ApiError, documented
from controlplane.gateway.context_cap import enforce_context_cap, token_count_field
from controlplane.gateway.exchange import Exchange, GatewayServices
from controlplane.gateway.relay import RelayResponse
from controlplane.tenancy.keycache import KeyPrincipal

router = APIRouter(
    prefix="/v1", tags=["openai"], responses=documented(400, 401, 403, 404, 413, 429, 503)
)

_BODY_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object", "required": ["model"]}}},
    }
}


@router.get("/models", summary="Models this key may use")
async def list_models(principal: TenantKeyDep, services: ServicesDep) -> Response:
    if not services.engines.any_healthy():
        raise ApiError(503, "no engine is healthy", code="engine_unavailable")
    allowed = [
        m
        for m in services.engines.model_objects()
        if principal.tenant.allows_model(str(m.get("id")))
    ]
    body = orjson.dumps({"object": "list", "data": allowed})
    return Response(body, media_type="application/json")


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The request body, refused (413) above `limit` bytes or (408) when slower than `seconds`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is larger than {limit} bytes", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):  # a client trickling its body holds no slot forever
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    message = f"request body is larger than {limit} bytes"
                    raise ApiError(413, message, code="body_too_large")
                chunks.append(chunk)
    except TimeoutError:
        message = f"the request body did not arrive within {seconds:g} s"
        raise ApiError(408, message, "invalid_request_error", "body_timeout") from None
    return b"".join(chunks)


def check_request(body: Any, principal: KeyPrincipal, services: GatewayServices) -> bool:
    """Validate what the gateway is responsible for; returns True if the body was changed."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(
            400, "'model' is required and must be a string", code="missing_model", param="model"
        )
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise ApiError(400, "'stream' must be true or false", code="invalid_value", param="stream")
    tenant = principal.tenant
    if not tenant.allows_model(model) or not services.engines.knows_model(model):
        if not services.engines.any_healthy():
            raise ApiError(503, "no engine is healthy", code="engine_unavailable")
        raise ApiError(
            404,
            f"the model {model!r} does not exist or this key may not use it",
            code="model_not_found",
            param="model",
        )
    if tenant.max_tokens is None:
        return False
    changed = False
    for field in ("max_tokens", "max_completion_tokens"):
        value = token_count_field(body, field)
        if value is None:
            continue
        if value > tenant.max_tokens:
            raise ApiError(
                400,
                f"'{field}' is {value}, above this tenant's cap of {tenant.max_tokens}",
                code="max_tokens_exceeded",
                param=field,
            )
    unset = body.get("max_tokens") is None and body.get("max_completion_tokens") is None
    if unset and tenant.max_context_tokens is None:  # else the context cap step sets it
        body["max_tokens"] = tenant.max_tokens  # without it the engine may run to the context end
        changed = True
    return changed


async def relay(request: Request, endpoint: str) -> Response:
    """Authenticate, read and check the request; the RelayResponse does the rest.

    A request with a valid key that the gateway refuses (bad JSON, disallowed model, too big)
    is still an API call of that tenant: it is answered through the RelayResponse too, so it gets
    its api.request and api.completion audit events like any other.
    """
    principal = await tenant_key(request)
    services: GatewayServices = request.app.state.gateway
    client = request.client.host if request.client else None
    raw, body, refusal, changed = b"", {}, None, False
    try:
        settings = services.settings
        raw = await read_body(request, settings.max_body_bytes, settings.body_timeout)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            message = f"the request body is not valid JSON: {exc}"
            raise ApiError(400, message, code="invalid_json") from None
        changed = check_request(body, principal, services)
        if principal.tenant.max_context_tokens is not None:
            tenant, pool = principal.tenant, services.engines
            changed = await enforce_context_cap(body, tenant, pool, endpoint, raw) or changed
    except ApiError as error:
        refusal = error
    exchange = Exchange(
        services, principal, endpoint, body if isinstance(body, dict) else {}, raw, client
    )
    exchange.body_changed = changed
    return RelayResponse(exchange, refusal)


# The relayed routes take only the request and authenticate inline. In the app, ControlPlaneApp
# (api/fastpath.py) serves them with the same `relay` before FastAPI's stack; these route
# definitions document them in OpenAPI and serve them in a plain FastAPI app.
RELAYED = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


@router.post("/chat/completions", summary="Chat completion", openapi_extra=_BODY_SCHEMA)
async def chat_completions(request: Request) -> Response:
    return await relay(request, "chat/completions")


@router.post("/completions", summary="Text completion", openapi_extra=_BODY_SCHEMA)
async def completions(request: Request) -> Response:
    return await relay(request, "completions")


@router.post("/embeddings", summary="Embeddings", openapi_extra=_BODY_SCHEMA)
async def embeddings(request: Request) -> Response:
    return await relay(request, "embeddings")
