"""What the gateway checks in a request before relaying it: the body, the model, the caps.

Everything here raises domain errors (`controlplane.gateway.errors`); the call answers them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request

from controlplane.core.errors import DomainError
from controlplane.engines.pool import EnginePool
from controlplane.gateway.context_cap import enforce_context_cap, token_count_field
from controlplane.gateway.errors import (
    BodyTimeout,
    BodyTooLarge,
    EngineUnavailable,
    InvalidRequest,
    ModelNotFound,
)
from controlplane.tenancy.policy import TenantPolicy


@dataclass(slots=True)
class CheckedRequest:
    """A request as read: its bytes, its JSON object, whether the gateway changed that object
    (`max_tokens` set under a cap), and the reason not to forward it, if there is one."""

    raw: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)
    changed: bool = False
    refusal: DomainError | None = None


async def read_request(
    request: Request,
    tenant: TenantPolicy,
    engines: EnginePool,
    endpoint: str,
    *,
    max_bytes: int,
    body_timeout: float,
) -> CheckedRequest:
    """Read and check the request of a tenant's call. A request the gateway refuses is still
    returned (with `refusal`): it is a call of that tenant, audited like any other."""
    checked = CheckedRequest()
    try:
        checked.raw = await read_body(request, max_bytes, body_timeout)
        try:
            body = orjson.loads(checked.raw)
        except orjson.JSONDecodeError as exc:
            message = f"the request body is not valid JSON: {exc}"
            raise InvalidRequest(message, code="invalid_json") from None
        if isinstance(body, dict):
            checked.body = body  # also when refused: its model goes into the audit
        checked.changed = check_request(body, tenant, engines)
        if tenant.max_context_tokens is not None:
            capped = await enforce_context_cap(body, tenant, engines, endpoint, checked.raw)
            checked.changed = capped or checked.changed
    except DomainError as error:
        checked.refusal = error
    return checked


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The request body, refused (413) above `limit` bytes or (408) when slower than `seconds`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):  # a client trickling its body holds no slot forever
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"request body is larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {seconds:g} s") from None
    return b"".join(chunks)


def check_request(body: Any, tenant: TenantPolicy, engines: EnginePool) -> bool:
    """Validate what the gateway is responsible for; returns True if the body was changed."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        message = "'model' is required and must be a string"
        raise InvalidRequest(message, code="missing_model", param="model")
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise InvalidRequest("'stream' must be true or false", param="stream")
    if not tenant.allows_model(model) or not engines.knows_model(model):
        if not engines.any_healthy():
            raise EngineUnavailable("no engine is healthy")
        message = f"the model {model!r} does not exist or this key may not use it"
        raise ModelNotFound(message, param="model")
    if tenant.max_tokens is None:
        return False
    changed = False
    for name in ("max_tokens", "max_completion_tokens"):
        value = token_count_field(body, name)
        if value is not None and value > tenant.max_tokens:
            message = f"'{name}' is {value}, above this tenant's cap of {tenant.max_tokens}"
            raise InvalidRequest(message, code="max_tokens_exceeded", param=name)
    unset = body.get("max_tokens") is None and body.get("max_completion_tokens") is None
    if unset and tenant.max_context_tokens is None:  # else the context cap step sets it
        body["max_tokens"] = tenant.max_tokens  # without it the engine may run to the context end
        changed = True
    return changed
