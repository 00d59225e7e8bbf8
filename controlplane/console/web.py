"""Rendering and plumbing shared by the console pages: templates, headers, DB calls, audit."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse

from controlplane.api.deps import audit_writer
from controlplane.api.errors import ApiError
from controlplane.api.headers import SECURITY_HEADERS as APP_SECURITY_HEADERS
from controlplane.console.sessions import ActiveSession
from controlplane.tenancy.actions import AdminContext
from controlplane.tenancy.limits import LIMITS, LimitField

PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATE_DIR = PACKAGE_DIR / "templates"
PREFIX = "/console"
STATIC_PREFIX = "/static"

# The application's security headers (controlplane/api/headers.py), and pages are never cached.
SECURITY_HEADERS = {**APP_SECURITY_HEADERS, "Cache-Control": "no-store"}

T = TypeVar("T")


@cache
def static_version(name: str) -> str:
    """A content hash for cache busting; static files only change with a release."""
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    return f"{STATIC_PREFIX}/{name}?v={static_version(name)}"


def console_url(path: str = "/", **query: Any) -> str:
    params = {key: value for key, value in query.items() if value not in (None, "")}
    suffix = f"?{urlencode(params)}" if params else ""
    return f"{PREFIX}{path}{suffix}"


def format_time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def format_number(value: float | int | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def format_limit(value: Any, field: LimitField) -> str:
    """A limit on the tenant page: its number and unit, its list, or what empty means."""
    if value is None or value == []:
        return field.limit.unset or "—"
    if isinstance(value, list):
        return ", ".join(value)
    return format_number(value) + field.limit.unit


def format_bytes(size: float | None) -> str:
    if size is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:,.1f} {unit}" if unit != "B" else f"{size:.0f} B"
        size /= 1024
    return f"{size} B"


@cache
def template_env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # every template, whatever its suffix
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(static_url=static_url, url=console_url, tenant_limits=LIMITS)
    env.filters.update(
        time=format_time, number=format_number, bytes=format_bytes, limit=format_limit
    )
    return env


def render(
    request: Request,
    template: str,
    active: ActiveSession | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    context.setdefault("notice", None)
    context.setdefault("error", None)
    html = (
        template_env()
        .get_template(template)
        .render(
            request=request, user=active, csrf_token=active.csrf_token if active else "", **context
        )
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def error_page(request: Request, error: ApiError) -> HTMLResponse:
    """A console page's error for a browser: the same status, message and code as the JSON."""
    response = render(
        request,
        "error.html",
        None,
        status_code=error.status,
        status=error.status,
        reason=_reason(error.status),
        message=error.message,
        code=error.code,
    )
    response.headers.update(error.headers)
    return response


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def redirect(path: str, **query: Any) -> RedirectResponse:
    """Post/redirect/get: 303 so the browser follows with GET."""
    return RedirectResponse(console_url(path, **query), status_code=303)


async def run_db(request: Request, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `work(session, ...)` in a worker thread with its own session."""
    factory = request.app.state.sessions

    def call() -> T:
        with factory() as db:
            return work(db, *args, **kwargs)

    return await run_in_threadpool(call)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def ensure_audit_writable(request: Request) -> None:
    """Fail closed: refuse a change up front when its audit entry could not be written
    (AuditUnavailable, answered 503)."""
    audit_writer(request).check_writable()


async def record(request: Request, kind: str, active: ActiveSession | None, **fields: Any) -> int:
    """Write one audit entry for a console event, with who did it and from where."""
    seq: int = await audit_writer(request).record(kind, **_who(request, active, fields))
    return seq


async def record_change(
    request: Request, kind: str, active: ActiveSession | None, **fields: Any
) -> int:
    """`record` for a change already committed: kept if the store fails meanwhile
    (AuditWriter.record_change)."""
    seq: int = await audit_writer(request).record_change(kind, **_who(request, active, fields))
    return seq


def _who(request: Request, active: ActiveSession | None, fields: dict[str, Any]) -> dict[str, Any]:
    if active is not None:
        fields.setdefault("actor", active.username)
        fields.setdefault("actor_role", active.role)
    fields.setdefault("client", client_address(request))
    fields.setdefault("via", "console")
    return fields


def admin_context(request: Request, active: ActiveSession) -> AdminContext:
    """The controlplane's shared admin path (same audit events as the CLI and the API)."""
    state = request.app.state
    return AdminContext(
        state.sessions, state.pepper, audit_writer(request), active.username, active.role
    )


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, code="invalid_value", param=param)
