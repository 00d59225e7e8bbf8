"""Sign-in (local accounts and LDAP) and sign-out."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from controlplane.api.deps import audit_writer
from controlplane.api.errors import ApiError
from controlplane.audit.errors import AuditUnavailable
from controlplane.console import throttle
from controlplane.console.auth import (
    SignInOutcome,
    SignInResult,
    authenticate,
)
from controlplane.console.deps import (
    Action,
    clear_session_cookie,
    current_session,
    is_tls,
    session_policy,
    set_session_cookie,
)
from controlplane.console.directory import accounts, ldap_directory, oidc_client
from controlplane.console.directory.accounts import (
    DirectoryIdentity,
    DirectoryRefusal,
    DirectorySignIn,
    DirectoryUnavailable,
)
from controlplane.console.directory.ldap import LdapDirectory
from controlplane.console.models import AdminUser, Source
from controlplane.console.sessions import (
    SessionPolicy,
    end_session,
    purge_expired,
    start_session,
    tokens_match,
)
from controlplane.console.web import (
    PREFIX,
    client_address,
    record,
    record_change,
    redirect,
    render,
    run_db,
)

log = logging.getLogger(__name__)
router = APIRouter()
SIGNIN_CSRF_COOKIE = "sparkplane_signin"
AUDIT_DOWN = (
    "The audit store cannot be written, so sign-in is refused until it is back "
    "(see /readyz and the service log)."
)

# One answer for every failure and one for every throttled attempt, whoever the account is.
WRONG_CREDENTIALS = "Wrong username or password."
THROTTLED = "Too many failed sign-ins from your address; try again in {wait} seconds."
DIRECTORY_DOWN = (
    "The directory cannot be reached, so directory sign-in is unavailable for now. Try again "
    "later, or sign in with a local account."
)


def safe_next(path: str | None) -> str:
    """Only redirect back into the console, never to another site (`//evil`, `/\\evil`)."""
    if path and path.startswith(f"{PREFIX}/") and not path.startswith(("//", "/\\")):
        return path if "\\" not in path else f"{PREFIX}/"
    return f"{PREFIX}/"


def signin_page(
    request: Request, error: str | None = None, status_code: int = 200, username: str = "",
    next_path: str = "", method: str = "",
) -> Response:  # fmt: skip
    # Double-submit token for the sign-in form: there is no session to bind it to yet.
    token = request.cookies.get(SIGNIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    state = request.app.state
    ldap = ldap_directory(state) is not None
    response = render(
        request, "signin.html", None, status_code=status_code, error=error,
        signin_csrf=token, username=username, next_path=next_path, ldap=ldap,
        method=method or ("ldap" if ldap else "local"),
        oidc_name=state.settings.oidc_display_name if oidc_client(state) else None,
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


def signed_in_response(request: Request, token: str, next_path: str) -> Response:
    response = redirect(safe_next(next_path).removeprefix(PREFIX))
    set_session_cookie(request, response, token)
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path=f"{PREFIX}/signin")
    return response


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
        user.last_signin_address = address[:64]
        token = start_session(db, user, policy, address)
        _succeeded(db, address, username, policy)
    db.commit()
    return SignInAttempt(result, token)


def _succeeded(db: Session, address: str, username: str, policy: SessionPolicy) -> None:
    throttle.succeeded(db, address, username)
    # Housekeeping: sign-ins are rare, expired rows pile up.
    purge_expired(db, policy)
    throttle.purge(db)
    db.commit()


def throttled_page(request: Request, wait: int, username: str, next_path: str,
                   method: str) -> Response:  # fmt: skip
    response = signin_page(request, THROTTLED.format(wait=wait), 429, username, next_path, method)
    response.headers["Retry-After"] = str(wait)
    return response


@dataclass(frozen=True)
class SignInForm:
    username: str
    password: str
    next_path: str
    method: str
    address: str
    blocked_seconds: int  # the wait this attempt's failure puts in force


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await request.form()
    username = str(form.get("username", ""))[:128]
    next_path = str(form.get("next", ""))
    method = str(form.get("method", "local"))
    if not tokens_match(request.cookies.get(SIGNIN_CSRF_COOKIE, ""), str(form.get("csrf_token"))):
        raise ApiError(403, "missing or wrong CSRF token; reload the sign-in page",
                       code="csrf_failed")  # fmt: skip
    try:
        audit_writer(request).check_writable()
    except AuditUnavailable:  # fail closed: a sign-in that cannot be audited does not happen
        return signin_page(request, AUDIT_DOWN, 503, username, next_path, method)
    address = client_address(request)
    admission = await run_db(request, throttle.admit, address, username)
    if admission.wait:
        # Refused before any check: nothing was tried, so nothing is audited (a flood of
        # refusals must not grow the audit log); the failure that started the wait was.
        return throttled_page(request, admission.wait, username, next_path, method)
    attempt = SignInForm(username, str(form.get("password", ""))[:1024], next_path, method,
                         address, admission.delay_if_failed)  # fmt: skip
    directory = ldap_directory(request.app.state)
    if method == "ldap" and directory is not None:
        return await _ldap_signin(request, directory, attempt)
    return await _local_signin(request, attempt)


async def _local_signin(request: Request, form: SignInForm) -> Response:
    policy = session_policy(request)
    attempt = await run_db(request, _attempt, form.username, form.password, policy, form.address)
    result = attempt.result
    if attempt.token is None:
        await record(request, "console.signin_failed", None, actor=result.username,
                     reason=result.outcome.value, source="local",
                     blocked_seconds=form.blocked_seconds)  # fmt: skip
        return signin_page(request, WRONG_CREDENTIALS, 401, form.username, form.next_path,
                           "local")  # fmt: skip
    await record(request, "console.signin", None, actor=result.username, source="local")
    return signed_in_response(request, attempt.token, form.next_path)


async def _ldap_signin(request: Request, directory: LdapDirectory, form: SignInForm) -> Response:
    actor = f"ldap:{form.username.strip().lower()}"[:128]
    try:
        identity = await run_in_threadpool(directory.authenticate, form.username, form.password)
        signed = await run_db(request, accounts.sign_in, identity, session_policy(request),
                              form.address)  # fmt: skip
    except DirectoryUnavailable as exc:
        # Nothing was checked: the attempt does not count against the address.
        await run_db(request, _refund, form.address, form.username)
        log.warning("LDAP sign-in unavailable: %s", exc)
        await record(request, "console.signin_failed", None, actor=actor, source="ldap",
                     reason="directory_unavailable", detail=str(exc))  # fmt: skip
        return signin_page(request, DIRECTORY_DOWN, 503, form.username, form.next_path, "ldap")
    except DirectoryRefusal as exc:
        ended = False
        if exc.reason in ("unknown_user", "no_role"):
            # The directory's own word: this person is gone, or has no role any more.
            ended = await run_db(request, accounts.end_sessions_of, Source.LDAP, form.username)
        await record(request, "console.signin_failed", None, actor=actor, source="ldap",
                     reason=exc.reason, blocked_seconds=form.blocked_seconds,
                     sessions_ended=ended)  # fmt: skip
        return signin_page(request, exc.message, exc.status, form.username, form.next_path,
                           "ldap")  # fmt: skip
    await run_db(request, _succeeded, form.address, form.username, session_policy(request))
    await record_directory_signin(request, identity, signed)
    return signed_in_response(request, signed.token, form.next_path)


def _refund(db: Session, address: str, username: str) -> None:
    throttle.refund(db, address, username)
    db.commit()


async def record_directory_signin(request: Request, identity: DirectoryIdentity,
                                  signed: DirectorySignIn) -> None:  # fmt: skip
    """`console.signin` with who the directory says this is, and what it granted."""
    changed = signed.previous_role is not None and signed.previous_role != identity.role
    await record(request, "console.signin", None, actor=signed.username,
                 actor_role=identity.role.value, source=identity.source.value,
                 identity=identity.external_id, groups=identity.groups,
                 role_before=signed.previous_role if changed else None,
                 sessions_ended=changed)  # fmt: skip


@router.post("/signout")
async def signout(request: Request, active: Action) -> Response:
    def sign_out(db: Session) -> None:
        end_session(db, active.token_hash)
        db.commit()

    await run_db(request, sign_out)
    await record_change(request, "console.signout", active)
    response: Response = redirect("/signin")
    client = oidc_client(request.app.state) if active.source == Source.OIDC else None
    logout = await client.logout_url() if client is not None else None
    if logout:
        # Also end the session at the identity provider (RP-initiated logout), which sends the
        # browser back to the sign-in page.
        response = render(
            request,
            "continue.html",
            None,
            heading="Signed out",
            link_text="Sign out at the identity provider too",
            target=logout,
        )
    clear_session_cookie(request, response)
    return response
