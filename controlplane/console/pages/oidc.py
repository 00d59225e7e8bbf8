"""OpenID Connect sign-in: start (redirect to the provider) and callback (back from it)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from controlplane.api.deps import audit_writer
from controlplane.api.errors import ApiError
from controlplane.audit.errors import AuditUnavailable
from controlplane.console.deps import is_tls, session_policy, set_session_cookie
from controlplane.console.directory import accounts, oidc_client, oidc_state
from controlplane.console.directory.accounts import DirectoryRefusal, DirectoryUnavailable
from controlplane.console.directory.oidc import OidcClient
from controlplane.console.models import Source
from controlplane.console.pages.signin import AUDIT_DOWN, record_directory_signin, safe_next
from controlplane.console.pages.signin import signin_page as page
from controlplane.console.web import PREFIX, client_address, record, render, run_db

log = logging.getLogger(__name__)
router = APIRouter()
OIDC_COOKIE = "sparkplane_oidc"
PROVIDER_DOWN = (
    "The identity provider cannot be reached, so single sign-on is unavailable for now. Try "
    "again later, or sign in with a local account."
)
STATE_UNKNOWN = (
    "This sign-in answer is unknown, expired or was already used; start the sign-in again."
)


def _client(request: Request) -> OidcClient:
    client = oidc_client(request.app.state)
    if client is None:
        raise ApiError(404, "single sign-on is not configured (SPARKPLANE_OIDC_ISSUER)",
                       code="not_found")  # fmt: skip
    return client


async def _failed(request: Request, reason: str, message: str, status: int,
                  actor: str = "oidc", **fields: object) -> Response:  # fmt: skip
    await record(request, "console.signin_failed", None, actor=actor[:128], source="oidc",
                 reason=reason, **fields)  # fmt: skip
    return page(request, message, status)


@router.get("/oidc/start")
async def oidc_start(request: Request, next: str = "") -> Response:
    client = _client(request)
    pending = await run_db(request, oidc_state.begin, safe_next(next) if next else "")
    try:
        url = await client.authorization_url(pending.state, pending.nonce, pending.code_verifier)
    except DirectoryUnavailable as exc:
        log.warning("OIDC sign-in unavailable: %s", exc)
        return await _failed(request, "directory_unavailable", PROVIDER_DOWN, 503, detail=str(exc))
    response = RedirectResponse(url, status_code=303)
    # Lax, not Strict: it must come back with the provider's cross-site redirect.
    response.set_cookie(OIDC_COOKIE, pending.browser_token, max_age=int(oidc_state.LOGIN_TTL.
                        total_seconds()), path=f"{PREFIX}/oidc", secure=is_tls(request),
                        httponly=True, samesite="lax")  # fmt: skip
    return response


@router.get("/oidc/callback")
async def oidc_callback(request: Request, state: str = "", code: str = "", error: str = "",
                        iss: str = "") -> Response:  # fmt: skip
    client = _client(request)
    try:
        audit_writer(request).check_writable()
    except AuditUnavailable:  # fail closed, before the state is used up
        return page(request, AUDIT_DOWN, 503)
    login = await run_db(request, oidc_state.consume, state, request.cookies.get(OIDC_COOKIE, ""))
    if login is None:
        return await _failed(request, "state_unknown", STATE_UNKNOWN, 400)
    if iss and iss != client.config.issuer:
        # RFC 9207: an answer from another provider than the one asked (mix-up attack).
        return await _failed(request, "wrong_issuer", STATE_UNKNOWN, 400, detail=iss[:200])
    if error or not code:
        message = f"The identity provider did not sign you in ({error[:80] or 'no code'})."
        return await _failed(request, "provider_refused", message, 401, detail=error[:200])
    try:
        token = await client.exchange(code, login.code_verifier)
        identity = await client.identity(token, login.nonce)
        signed = await run_db(request, accounts.sign_in, identity, session_policy(request),
                              client_address(request))  # fmt: skip
    except DirectoryUnavailable as exc:
        log.warning("OIDC sign-in unavailable: %s", exc)
        return await _failed(request, "directory_unavailable", PROVIDER_DOWN, 503, detail=str(exc))
    except DirectoryRefusal as exc:
        ended = False
        if exc.reason == "no_role" and exc.name:
            ended = await run_db(request, accounts.end_sessions_of, Source.OIDC, exc.name)
        actor = f"oidc:{exc.name.lower()}" if exc.name else "oidc"
        detail = str(exc.__cause__ or "")[:300]
        return await _failed(request, exc.reason, exc.message, exc.status, actor=actor,
                             detail=detail, sessions_ended=ended)  # fmt: skip
    await record_directory_signin(request, identity, signed)
    response = render(
        request,
        "continue.html",
        None,
        heading="Signed in",
        link_text="Continue to the console",
        target=safe_next(login.next_path),
    )
    set_session_cookie(request, response, signed.token)
    response.delete_cookie(OIDC_COOKIE, path=f"{PREFIX}/oidc")
    return response
