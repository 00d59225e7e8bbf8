"""Request guards of the console: signed in, role, CSRF, session cookie.

Every page declares one of `Viewer`, `AdminViewer`, `Action` or `AdminAction`; there is no
route without a guard except the sign-in page itself.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from starlette.responses import Response

from controlplane.api.errors import ApiError
from controlplane.console.models import Role
from controlplane.console.sessions import ActiveSession, SessionPolicy, load_session, tokens_match
from controlplane.console.web import console_url, run_db

PASSWORD_PATH = "/password"  # noqa: S105 (a URL path)
SIGNOUT_PATH = "/signout"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


def session_policy(request: Request) -> SessionPolicy:
    settings = request.app.state.settings
    idle = getattr(settings, "console_idle_minutes", None)
    absolute = getattr(settings, "console_session_hours", None)
    default = SessionPolicy()
    return SessionPolicy(
        idle_timeout=timedelta(minutes=idle) if idle else default.idle_timeout,
        absolute_timeout=timedelta(hours=absolute) if absolute else default.absolute_timeout,
    )


def is_tls(request: Request) -> bool:
    return request.url.scheme == "https"


def cookie_name(request: Request) -> str:
    # The __Host- prefix makes the browser refuse the cookie unless Secure, Path=/, no Domain.
    return "__Host-sparkplane_console" if is_tls(request) else "sparkplane_console"


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    # No Max-Age: the browser forgets the cookie when it closes; the server enforces both expiries.
    response.set_cookie(
        cookie_name(request),
        token,
        path="/",
        secure=is_tls(request),
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        cookie_name(request), path="/", secure=is_tls(request), httponly=True, samesite="strict"
    )


def signin_redirect(request: Request) -> ApiError:
    target = request.url.path
    if request.url.query:
        target += f"?{request.url.query}"
    location = console_url("/signin", next=target if request.method == "GET" else None)
    return ApiError(
        303, "sign in to the console first", "authentication_error", "signin_required",
        headers={"Location": location},
    )  # fmt: skip


async def current_session(request: Request) -> ActiveSession | None:
    token = request.cookies.get(cookie_name(request))
    if not token:
        return None
    active: ActiveSession | None = await run_db(
        request, load_session, token, session_policy(request)
    )
    return active


async def signed_in(request: Request) -> ActiveSession:
    active = await current_session(request)
    if active is None:
        raise signin_redirect(request)
    relative = request.url.path.removeprefix("/console")
    if active.must_change_password and relative not in (PASSWORD_PATH, SIGNOUT_PATH):
        # A one-time password opens only the change-password page.
        raise ApiError(
            303, "change the one-time password first", code="password_change_required",
            headers={"Location": console_url(PASSWORD_PATH)},
        )  # fmt: skip
    return active


def _require_admin(active: ActiveSession) -> ActiveSession:
    if active.role != Role.ADMIN:
        raise ApiError(403, "this action needs the admin role", code="role_forbidden")
    return active


async def admin_viewer(active: Annotated[ActiveSession, Depends(signed_in)]) -> ActiveSession:
    return _require_admin(active)


async def csrf_checked(
    request: Request, active: Annotated[ActiveSession, Depends(signed_in)]
) -> ActiveSession:
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        form = await request.form()  # Starlette caches it: the route can read it again
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not tokens_match(active.csrf_token, given):
        raise ApiError(403, "missing or wrong CSRF token; reload the page and try again",
                       code="csrf_failed")  # fmt: skip
    return active


async def admin_action(active: Annotated[ActiveSession, Depends(csrf_checked)]) -> ActiveSession:
    return _require_admin(active)


Viewer = Annotated[ActiveSession, Depends(signed_in)]
AdminViewer = Annotated[ActiveSession, Depends(admin_viewer)]
Action = Annotated[ActiveSession, Depends(csrf_checked)]
AdminAction = Annotated[ActiveSession, Depends(admin_action)]
