"""Dependencies of the routes: engines, metrics, the audit writer, database sessions, tenant
keys, admin principals."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from controlplane.api import admin_tokens
from controlplane.api.errors import ApiError, api_error
from controlplane.audit.writer import AuditWriter
from controlplane.core.config import Settings
from controlplane.core.security import looks_like_api_key, visible_prefix
from controlplane.engines.pool import EnginePool
from controlplane.metering.metrics import Metrics
from controlplane.tenancy.actions import AdminContext
from controlplane.tenancy.keycache import AuthFailed, KeyPrincipal

T = TypeVar("T")
log = logging.getLogger(__name__)

Role = Literal["admin", "auditor"]


@dataclass(frozen=True)
class Principal:
    """Who calls the admin API: `name` goes into audit events as the actor."""

    name: str
    role: Role


# The application's services, set up by its lifespan (controlplane.main). The getters are async
# on purpose: FastAPI runs sync dependencies in a worker thread, a needless hop.


def audit_writer(request: Request) -> AuditWriter:
    writer: AuditWriter = request.app.state.audit
    return writer


async def get_audit(request: Request) -> AuditWriter:
    return audit_writer(request)


async def get_engines(request: Request) -> EnginePool:
    engines: EnginePool = request.app.state.engines
    return engines


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


AuditDep = Annotated[AuditWriter, Depends(get_audit)]
EnginesDep = Annotated[EnginePool, Depends(get_engines)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def in_session(request: Request, work: Callable[[Session], T]) -> T:
    """Run `work(session)` in a worker thread: the sync ORM never blocks the event loop."""
    sessions = request.app.state.sessions

    def call() -> T:
        with sessions() as session:
            return work(session)

    return await run_in_threadpool(call)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


async def presented_credential(request: Request) -> str | None:
    """The request's bearer token, handed out only to an address that is not blocked: every
    credential check (tenant key, admin token, scrape token) gets it here, so a blocked address
    is answered 429 before any credential is looked at (controlplane/api/auth_limit.py)."""
    presented = bearer_token(request)
    # Only while some address is blocked: the hot path pays one truth test of an empty dict.
    if request.app.state.auth_limit.blocked:
        await refuse_if_blocked(request, presented)
    return presented


async def tenant_key(request: Request) -> KeyPrincipal:
    presented = await presented_credential(request)
    try:
        return await request.app.state.authenticator.authenticate(presented)
    except AuthFailed as failure:
        raise await refused(request, failure, presented) from None


async def refuse_if_blocked(request: Request, presented: str | None) -> None:
    """429 for an address past its allowance of refused credentials, before any check."""
    wait = request.app.state.auth_limit.wait(client_host(request) or "unknown")
    if wait:
        message = f"too many refused credentials from this address; retry in {wait} seconds"
        blocked = AuthFailed(429, "too_many_auth_failures", message)
        raise await refused(request, blocked, presented, retry_after=wait)


async def refused(
    request: Request, failure: AuthFailed, presented: str | None, retry_after: int = 0
) -> ApiError:
    """Count, limit and audit a refused credential; returns the error to raise.

    `api.auth_failed` records who knocked with what (the key's visible prefix, never the key),
    once per address and window, then as one summary of the repeats
    (controlplane/api/refusals.py). Past the address's allowance the answer is 429 with
    Retry-After (controlplane/api/auth_limit.py). The refusal does not depend on the audit: with
    the store down the caller still gets its 401/403/429 and the failure is logged instead."""
    state = request.app.state
    metrics: Metrics = state.metrics
    metrics.auth_failures.labels(failure.code).inc()
    client = client_host(request)
    if not retry_after:
        retry_after = await state.auth_limit.failed(client or "unknown")
        if retry_after:
            message = (
                f"too many refused credentials from this address; retry in {retry_after} seconds"
            )
            failure = AuthFailed(429, "too_many_auth_failures", message)
    owner = failure.principal
    shaped = presented is not None and looks_like_api_key(presented)
    await state.refusals.record(
        "api.auth_failed",
        client,
        tenant=owner.tenant.name if owner else None,
        endpoint=request.url.path,
        reason=failure.code,
        status=failure.status,
        key_prefix=visible_prefix(presented) if presented and shaped else None,
        key_id=owner.key_id if owner else None,
    )
    error = api_error(failure)
    if retry_after:
        error.headers["Retry-After"] = str(retry_after)
    return error


TenantKeyDep = Annotated[KeyPrincipal, Depends(tenant_key)]


async def current_principal(request: Request) -> Principal:
    """The admin API's caller: the holder of an admin token (people use the console).

    A token written by `sparkplane admin-token rotate` carries its role; it is looked up on
    every request, so a rotation takes effect at once on every replica. SPARKPLANE_ADMIN_TOKEN
    has the admin role until a rotation of the default name retires it."""
    settings = request.app.state.settings
    token = await presented_credential(request)
    if token is None:
        message = "send 'Authorization: Bearer <admin token>'"
        raise await refused(request, AuthFailed(401, "not_authenticated", message), token)
    pepper = request.app.state.pepper
    stored = await in_session(request, lambda db: admin_tokens.lookup(db, pepper, token))
    if stored is not None and stored.revoked_at is None:
        role: Role = "admin" if stored.role == "admin" else "auditor"
        return Principal(name=stored.name, role=role)
    configured = settings.admin_token
    if stored is None and configured is None:
        message = (
            "the admin API is off: set SPARKPLANE_ADMIN_TOKEN or run `sparkplane admin-token "
            "rotate`, or use the console"
        )
        raise await refused(request, AuthFailed(401, "admin_api_disabled", message), token)
    if stored is not None or not hmac.compare_digest(
        token.encode(), configured.get_secret_value().encode() if configured else b""
    ):
        message = "the admin token is not valid"
        raise await refused(request, AuthFailed(401, "invalid_admin_token", message), token)
    return Principal(name=admin_tokens.DEFAULT_NAME, role="admin")


def _metrics_token(settings: Settings) -> str | None:
    """The scrape token, read at each scrape so that a rewritten file takes effect at once."""
    if settings.metrics_token_file is None:
        return None
    try:
        token = settings.metrics_token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        log.error("cannot read SPARKPLANE_METRICS_TOKEN_FILE: %s", exc)
        return None
    return token or None


async def metrics_scraper(request: Request) -> None:
    """/metrics lists tenants, usage and refusals: only the holder of the scrape token reads it."""
    token = await presented_credential(request)
    expected = _metrics_token(request.app.state.settings)
    if expected is None:
        message = "metrics are off: set SPARKPLANE_METRICS_TOKEN_FILE (docs/security.md)"
        raise await refused(request, AuthFailed(401, "metrics_token_not_set", message), token)
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        message = "send 'Authorization: Bearer <the scrape token>'"
        raise await refused(request, AuthFailed(401, "invalid_metrics_token", message), token)


async def current_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if principal.role != "admin":
        raise ApiError(
            403,
            f"role {principal.role!r} may not change tenants or keys",
            code="admin_role_required",
        )
    return principal


CurrentAdmin = Annotated[Principal, Depends(current_admin)]


async def audit_writable(request: Request, _admin: CurrentAdmin) -> None:
    """Refuse a change up front when it could not be audited (fail closed): AuditUnavailable,
    which the error handlers answer with 503. After the role: whoever may not change anything
    is told so (403), whatever the audit store's state."""
    audit_writer(request).check_writable()


ReaderDep = Annotated[Principal, Depends(current_principal)]
MetricsScraper = Depends(metrics_scraper)
AuditWritable = Depends(audit_writable)


def admin_context(request: Request, actor: Principal) -> AdminContext:
    state = request.app.state
    return AdminContext(state.sessions, state.pepper, audit_writer(request), actor.name, actor.role)
