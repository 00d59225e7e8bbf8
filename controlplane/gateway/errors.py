"""Why the gateway does not relay a call, as domain errors (the HTTP layer answers them)."""

from __future__ import annotations

import orjson

from controlplane.core.errors import DomainError


class InvalidRequest(DomainError):
    """The request itself is wrong (not JSON, a field of the wrong type, over a tenant cap)."""

    code = "invalid_value"


class ModelNotFound(DomainError):
    status = 404
    code = "model_not_found"


class BodyTooLarge(DomainError):
    status = 413
    code = "body_too_large"


class BodyTimeout(DomainError):
    """The client sent its body too slowly: it holds no slot forever."""

    status = 408
    code = "body_timeout"


class ClientLeft(DomainError):
    """The client closed its connection before its body arrived: nobody to answer, but the
    call of an authenticated key is audited (as cancelled, with nginx's 499)."""

    status = 499
    code = "client_closed"


class EngineUnavailable(DomainError):
    """No engine could take or check the call; the client may try again."""

    status = 503
    code = "engine_unavailable"


class EngineTimeout(DomainError):
    status = 504
    code = "request_timeout"


class EngineBrokeOff(DomainError):
    """The engine's answer broke off (a 502, or a stream's last event once it is under way)."""

    status = 502
    code = "engine_error"


class EngineRefused(DomainError):
    """The engine answered with an error: vLLM's 4xx for a request it cannot run (no
    `messages`, a context too long) or its own failure. Told in the one error shape: vLLM's body
    has its own `type` ("BadRequestError") and an integer `code`."""

    code = "engine_rejected"

    @classmethod
    def from_engine(cls, status: int, body: bytes) -> EngineRefused:
        if status >= 500:  # its text may describe the engine's insides: not for clients
            message = f"the engine failed to answer ({status}); try again"
            return cls(message, status=status, code="engine_error")
        message, param = _engine_error_fields(body)
        return cls(message or f"the engine refused the request ({status})", status=status,
                   param=param)  # fmt: skip


_MAX_ENGINE_MESSAGE = 1000  # characters of the engine's own message passed on


def _engine_error_fields(body: bytes) -> tuple[str, str | None]:
    """(message, param) of vLLM's error body `{"error": {...}}` (or an older flat one)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", None
    error = parsed.get("error", parsed) if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return "", None
    message, param = error.get("message"), error.get("param")
    return (
        message[:_MAX_ENGINE_MESSAGE] if isinstance(message, str) else "",
        param[:200] if isinstance(param, str) and param else None,
    )
