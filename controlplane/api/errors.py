"""The one error shape: OpenAI's `{"error": {"message", "type", "param", "code"}}`.

Every error response of the service comes from here: `ApiError` raised by the HTTP layer,
domain errors (`DomainError`: tenancy, admission, the gateway's checks, an unavailable audit
store) through `api_error`, FastAPI's validation errors, Starlette's 404/405 and unexpected
exceptions (logged with a traceback, answered without one). The gateway's relay sends its
errors with `send_error`, in the same shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Send

from controlplane.admission.limits import Rejected
from controlplane.audit.errors import AuditUnavailable
from controlplane.core.errors import DomainError
from controlplane.tenancy.keycache import AuthFailed

log = logging.getLogger(__name__)

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every error response (OpenAI's shape)."""

    error: ErrorDetail


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, all in the one error shape."""
    reasons = {
        400: "bad request",
        401: "no or wrong credentials",
        403: "not allowed",
        404: "no such thing",
        409: "conflicts with what exists",
        413: "body too large",
        422: "invalid input",
        429: "a limit was reached",
        503: "a dependency is down",
    }
    return {s: {"model": ErrorResponse, "description": reasons.get(s, "error")} for s in statuses}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPE_BY_STATUS.get(status, "api_error")
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        """This error in the one error shape."""
        return error_body(self.status, self.message, self.type, self.code, self.param)


def error_body(
    status: int,
    message: str,
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    error = {
        "message": message,
        "type": type or _TYPE_BY_STATUS.get(status, "api_error"),
        "param": param,
        "code": code,
    }
    return orjson.dumps({"error": error})


def sse_error_event(exc: ApiError) -> bytes:
    """The error as the last event of a stream already under way (its status line is gone):
    OpenAI's API ends a failed stream the same way, and its SDKs raise it as an APIError."""
    return b"data: " + exc.body() + b"\n\n"


def error_response(exc: ApiError) -> Response:
    return Response(exc.body(), exc.status, headers=exc.headers, media_type="application/json")


async def send_error(send: Send, exc: ApiError) -> None:
    """Answer with the error on a raw ASGI channel (the relay's own sending), with its length."""
    response = error_response(exc)
    start = {"type": "http.response.start", "status": response.status_code}
    await send({**start, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


def api_error(exc: DomainError) -> ApiError:
    """The HTTP answer to a domain error: its status, message, code and param, plus the headers
    HTTP gives some of them. The audit store's own failure is not told to callers."""
    if isinstance(exc, AuditUnavailable):
        return audit_unavailable_error()
    headers = {}
    if isinstance(exc, Rejected):
        headers["Retry-After"] = exc.retry_after_header
    elif isinstance(exc, AuthFailed) and exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return ApiError(exc.status, exc.message, code=exc.code, param=exc.param, headers=headers)


# An HTML rendering of an error for pages under a path prefix (the console registers one).
HtmlErrorPage = Callable[[Request, ApiError], Response]


def add_html_error_page(app: FastAPI, prefix: str, page: HtmlErrorPage) -> None:
    """Errors of browser requests (Accept: text/html) under `prefix` render with `page`;
    everything else, and every API client, gets the JSON error shape."""
    app.state.html_error_pages[prefix] = page  # the registry install_error_handlers made


def _respond(request: Request, error: ApiError) -> Response:
    pages: dict[str, HtmlErrorPage] = request.app.state.html_error_pages
    if pages and "text/html" in request.headers.get("accept", ""):
        path = request.url.path
        for prefix, page in pages.items():
            if path == prefix or path.startswith(prefix + "/"):
                return page(request, error)
    return error_response(error)


def audit_unavailable_error() -> ApiError:
    return ApiError(
        503,
        "the audit store cannot be written; the service refuses changes and "
        "inference until it is back",
        "service_unavailable",
        "audit_unavailable",
    )


def _describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid value"))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return (f"{param}: {message}{more}" if param else f"{message}{more}"), param


# Refusals that tell of probing: audited as `http.refused` (controlplane/api/refusals.py
# aggregates repeats from one address), findings 8 of issue 17.
AUDITED_REFUSALS = frozenset({"csrf_failed", "role_forbidden", "admin_role_required",
                              "method_not_allowed"})  # fmt: skip


async def _audit_refusal(request: Request, error: ApiError) -> None:
    refusals = getattr(request.app.state, "refusals", None)
    if error.code in AUDITED_REFUSALS and refusals is not None:
        client = request.client.host if request.client else None
        fields = {"endpoint": request.url.path, "method": request.method,
                  "status": error.status, "code": error.code}  # fmt: skip
        await refusals.record("http.refused", client, **fields)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    await _audit_refusal(request, exc)
    return _respond(request, exc)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    if isinstance(exc, AuditUnavailable):
        log.error("audit store unavailable: %s", exc)
    return _respond(request, api_error(exc))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, param = _describe_validation_error(exc)
    return _respond(request, ApiError(422, message, code="invalid_value", param=param))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    headers = dict(exc.headers or {})
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    error = ApiError(exc.status_code, message, code=codes.get(exc.status_code), headers=headers)
    await _audit_refusal(request, error)
    return _respond(request, error)


async def _client_gone(_request: Request, _exc: Exception) -> Response:
    # The client left while its request body was being read: nobody is there to answer.
    return Response(status_code=499)


def internal_error() -> ApiError:
    message = "internal error; the administrator can find it in the service log"
    return ApiError(500, message, "api_error", "internal_error")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(request, internal_error())


def install_error_handlers(app: FastAPI) -> None:
    app.state.html_error_pages = {}  # prefix -> HtmlErrorPage, filled by add_html_error_page
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
