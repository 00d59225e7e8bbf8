"""Sign-in, sign-out and change-password pages."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from controlplane.api.deps import audit_writer
from controlplane.api.errors import ApiError
from controlplane.audit.errors import AuditUnavailable
from controlplane.console.auth import (
    MIN_PASSWORD_LENGTH,
    ConsoleAuthError,
    SignInOutcome,
    SignInResult,
    SignInThrottle,
    authenticate,
    change_password,
)
from controlplane.console.deps import (
    Action,
    Viewer,
    clear_session_cookie,
    current_session,
    is_tls,
    session_policy,
    set_session_cookie,
)
from controlplane.console.models import AdminUser
from controlplane.console.sessions import (
    SessionPolicy,
    end_session,
    end_user_sessions,
    purge_expired,
    start_session,
    tokens_match,
)
from controlplane.console.web import (
    PREFIX,
    client_address,
    ensure_audit_writable,
    record,
    redirect,
    render,
    run_db,
)

router = APIRouter()
SIGNIN_CSRF_COOKIE = "sparkplane_signin"
AUDIT_DOWN = (
    "The audit store cannot be written, so sign-in is refused until it is back "
    "(see /readyz and the service log)."
)


def throttle(request: Request) -> SignInThrottle:
    state = request.app.state
    if not hasattr(state, "console_signin_throttle"):
        state.console_signin_throttle = SignInThrottle()
    limiter: SignInThrottle = state.console_signin_throttle
    return limiter


def safe_next(path: str | None) -> str:
    """Only redirect back into the console, never to another site (`//evil`, `/\\evil`)."""
    if path and path.startswith(f"{PREFIX}/") and not path.startswith(("//", "/\\")):
        return path if "\\" not in path else f"{PREFIX}/"
    return f"{PREFIX}/"


def signin_page(
    request: Request, error: str | None = None, status_code: int = 200, username: str = "",
    next_path: str = "",
) -> Response:  # fmt: skip
    # Double-submit token for the sign-in form: there is no session to bind it to yet.
    token = request.cookies.get(SIGNIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request, "signin.html", None, status_code=status_code, error=error,
        signin_csrf=token, username=username, next_path=next_path,
    )  # fmt: skip
    response.set_cookie(
        SIGNIN_CSRF_COOKIE, token, path=f"{PREFIX}/signin", secure=is_tls(request),
        httponly=True, samesite="strict",
    )  # fmt: skip
    return response


@router.get("/signin")
async def signin_form(request: Request, next: str = "") -> Response:
    if await current_session(request) is not None:
        return redirect("/")
    return signin_page(request, next_path=safe_next(next) if next else "")


@dataclass(frozen=True)
class SignInAttempt:
    result: SignInResult
    token: str | None


def _attempt(db: Session, username: str, password: str, policy: SessionPolicy,
             address: str) -> SignInAttempt:  # fmt: skip
    result = authenticate(db, username, password)
    token = None
    if result.outcome is SignInOutcome.OK:
        user = db.get(AdminUser, result.user_id)
        assert user is not None
        token = start_session(db, user, policy, address)
        purge_expired(db, policy)  # housekeeping: sign-ins are rare, expired rows pile up
    db.commit()
    return SignInAttempt(result, token)


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await request.form()
    username = str(form.get("username", ""))[:128]
    password = str(form.get("password", ""))[:1024]
    next_path = str(form.get("next", ""))
    if not tokens_match(request.cookies.get(SIGNIN_CSRF_COOKIE, ""), str(form.get("csrf_token"))):
        raise ApiError(403, "missing or wrong CSRF token; reload the sign-in page",
                       code="csrf_failed")  # fmt: skip
    address = client_address(request)
    wait = throttle(request).retry_after(address)
    if wait:
        response = signin_page(request, f"Too many failed sign-ins from your address; try "
                               f"again in {wait} seconds.", 429, username)  # fmt: skip
        response.headers["Retry-After"] = str(wait)
        return response
    try:
        audit_writer(request).check_writable()
    except AuditUnavailable:  # fail closed: a sign-in that cannot be audited does not happen
        return signin_page(request, AUDIT_DOWN, 503, username)
    attempt = await run_db(request, _attempt, username, password, session_policy(request), address)
    result = attempt.result
    if attempt.token is None:
        throttle(request).record_failure(address)
        await record(request, "console.signin_failed", None, actor=result.username,
                     reason=result.outcome.value)  # fmt: skip
        if result.outcome is SignInOutcome.LOCKED and result.locked_until is not None:
            until = result.locked_until.strftime("%H:%M UTC")
            return signin_page(request, f"Too many failed sign-ins: this account is locked "
                               f"until {until}.", 429, username, next_path)  # fmt: skip
        return signin_page(request, "Wrong username or password.", 401, username, next_path)
    await record(request, "console.signin", None, actor=result.username)
    response = redirect(safe_next(next_path).removeprefix(PREFIX))
    set_session_cookie(request, response, attempt.token)
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path=f"{PREFIX}/signin")
    return response


@router.post("/signout")
async def signout(request: Request, active: Action) -> Response:
    def sign_out(db: Session) -> None:
        end_session(db, active.token_hash)
        db.commit()

    await run_db(request, sign_out)
    await record(request, "console.signout", active)
    response = redirect("/signin")
    clear_session_cookie(request, response)
    return response


def _change(db: Session, user_id: int, keep: str, current: str, new: str) -> None:
    user = db.get(AdminUser, user_id)
    assert user is not None
    change_password(db, user, current, new)
    end_user_sessions(db, user_id, keep_token_hash=keep)  # sign out every other browser
    db.commit()


@router.get("/password")
async def password_form(request: Request, active: Viewer) -> Response:
    return render(request, "password.html", active, title="Change password",
                  min_length=MIN_PASSWORD_LENGTH)  # fmt: skip


@router.post("/password")
async def password_change(request: Request, active: Action) -> Response:
    form = await request.form()
    current = str(form.get("current_password", ""))
    new = str(form.get("new_password", ""))
    error = None
    if new != str(form.get("repeat_password", "")):
        error = "the two new passwords differ"
    else:
        ensure_audit_writable(request)
        try:
            await run_db(request, _change, active.user_id, active.token_hash, current, new)
        except ConsoleAuthError as exc:
            error = str(exc)
    if error is not None:
        return render(request, "password.html", active, status_code=400, error=error,
                      title="Change password", min_length=MIN_PASSWORD_LENGTH)  # fmt: skip
    await record(request, "admin.password_change", active, target=active.username)
    return redirect("/", notice="password_changed")
