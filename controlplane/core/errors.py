"""The base of every error the service's own logic reports to a caller.

Domain code (tenancy, admission, the gateway's checks, the audit) raises a `DomainError`
subclass; it never builds a response. The HTTP layer (`controlplane.api.errors`) turns each
into the one OpenAI error shape. `status` classifies the error the way every caller of this
service understands (an HTTP status: 400 the request is wrong, 404 no such thing, 429 a limit,
503 a dependency is down); `code` is machine-readable; `param` names the field at fault.
"""

from __future__ import annotations


class DomainError(Exception):
    status: int = 400
    code: str = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.param = param
