"""What the gateway checks in a request before relaying it: the body, the model, the caps.

Everything here raises domain errors (`controlplane.gateway.errors`); the call answers them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from controlplane.admission.limits import ONE, Demand
from controlplane.core.errors import DomainError
from controlplane.engines.pool import EnginePool
from controlplane.gateway.context_cap import enforce_context_cap, token_count_field
from controlplane.gateway.errors import (
    BodyTimeout,
    BodyTooLarge,
    ClientLeft,
    EngineUnavailable,
    InvalidRequest,
    ModelNotFound,
)
from controlplane.gateway.media import MEDIA_ENDPOINTS, refuse_remote_media
from controlplane.tenancy.policy import TenantPolicy

# Deepest JSON nesting the gateway takes: what orjson can write again. It reads 1024 levels
# but writes only 254, and a body the gateway rewrites (a max_tokens filled in, usage asked of
# the engine) or counts (the context cap) is written again: deeper is refused first.
MAX_JSON_DEPTH = 254


@dataclass(slots=True)
class CheckedRequest:
    """A request as read: its bytes, its JSON object, whether the gateway changed that object
    (`max_tokens` set under a cap), what it asks the engine to run, and the reason not to
    forward it, if there is one."""

    raw: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)
    changed: bool = False
    demand: Demand = ONE
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
        body = parse_json(checked.raw)
        if isinstance(body, dict):
            checked.body = body  # also when refused: its model goes into the audit
        checked.changed = check_request(body, tenant, engines)
        sequences = choices(body, tenant)
        if not tenant.allow_remote_media and endpoint in MEDIA_ENDPOINTS:
            refuse_remote_media(body)
        if tenant.max_context_tokens is not None:
            capped = await enforce_context_cap(
                body, tenant, engines, endpoint, checked.raw, sequences
            )
            checked.changed = capped or checked.changed
        checked.demand = demand_of(body, sequences)
    except DomainError as error:
        checked.refusal = error
    except ClientDisconnect:
        checked.refusal = ClientLeft("the client closed the connection before its body arrived")
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


def parse_json(raw: bytes) -> Any:
    """The body's JSON value; 400 `too_deep` above MAX_JSON_DEPTH, `invalid_json` if not JSON.

    Cheap on the hot path: a body with no more brackets than the bound cannot be too deep,
    which two C-speed counts prove for nearly every request; only the others are written once
    more by orjson, which refuses exactly what is too deep (measured in docs/benchmarks.md:
    a Python walk of the value costs some ten times more)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise _too_deep() from None
        message = f"the request body is not valid JSON: {exc}"
        raise InvalidRequest(message, code="invalid_json") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:
        try:
            orjson.dumps(body)
        except orjson.JSONEncodeError:
            raise _too_deep() from None
    return body


def _too_deep() -> InvalidRequest:
    message = f"the request body is nested deeper than {MAX_JSON_DEPTH} levels"
    return InvalidRequest(message, code="too_deep")


def choices(body: dict[str, Any], tenant: TenantPolicy) -> int:
    """The sequences the engine will run for this request: its `n` (1 if absent), refused
    above the tenant's `max_n` or its concurrency (n sequences hold n slots). `best_of`
    is held to the same bound (vLLM 0.32 accepts the field and ignores it)."""
    n = 1
    for name in ("n", "best_of"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidRequest(f"'{name}' must be a positive integer", param=name)
        bound = min(tenant.max_n, tenant.max_concurrency)
        if value > bound:
            which = "max_n" if tenant.max_n <= tenant.max_concurrency else "max_concurrency"
            message = (
                f"'{name}' is {value}, above this tenant's limit of {bound} "
                f"({which}: each choice is a sequence the engine runs)"
            )
            raise InvalidRequest(message, code="n_exceeded", param=name)
        if name == "n":
            n = value
    return n


def demand_of(body: dict[str, Any], sequences: int) -> Demand:
    """What admission counts: the sequences and their worst case, n x max_tokens."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    per_sequence = limit if isinstance(limit, int) and not isinstance(limit, bool) else 0
    if sequences == 1 and not per_sequence:
        return ONE
    return Demand(sequences, sequences * per_sequence)


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
    if not isinstance(body.get("stream_options", {}), dict | None):  # the relay adds to it
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
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
