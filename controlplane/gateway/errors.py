"""Why the gateway does not relay a call, as domain errors (the HTTP layer answers them)."""

from __future__ import annotations

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


class EngineUnavailable(DomainError):
    """No engine could take or check the call; the client may try again."""

    status = 503
    code = "engine_unavailable"


class EngineTimeout(DomainError):
    status = 504
    code = "request_timeout"


class EngineBrokeOff(DomainError):
    """The engine's answer broke off before its headers reached the client."""

    status = 502
    code = "engine_error"
