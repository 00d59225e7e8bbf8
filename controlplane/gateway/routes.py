"""The OpenAI-compatible API under /v1, relayed to the engines for a tenant key.

In the application, `ControlPlaneApp` (ingress.py) serves the relayed POST routes before
FastAPI's stack; these definitions document them in OpenAPI and serve them in a plain FastAPI
app, through the same `relay`.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from controlplane.api.deps import EnginesDep, TenantKeyDep
from controlplane.api.errors import documented
from controlplane.gateway.errors import EngineUnavailable
from controlplane.gateway.ingress import relay

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
async def list_models(principal: TenantKeyDep, engines: EnginesDep) -> Response:
    if not engines.any_healthy():
        raise EngineUnavailable("no engine is healthy")
    allowed = [
        m for m in engines.model_objects() if principal.tenant.allows_model(str(m.get("id")))
    ]
    body = orjson.dumps({"object": "list", "data": allowed})
    return Response(body, media_type="application/json")


class RelayedResponse(Response):
    """What a relayed route returns: FastAPI sends it, and it runs the call."""

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await relay(scope, receive, send, self.endpoint)


@router.post("/chat/completions", summary="Chat completion", openapi_extra=_BODY_SCHEMA)
async def chat_completions() -> Response:
    return RelayedResponse("chat/completions")


@router.post("/completions", summary="Text completion", openapi_extra=_BODY_SCHEMA)
async def completions() -> Response:
    return RelayedResponse("completions")


@router.post("/embeddings", summary="Embeddings", openapi_extra=_BODY_SCHEMA)
async def embeddings() -> Response:
    return RelayedResponse("embeddings")
