"""Dependencies of the routes: services, database sessions, tenant keys, admin principals."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from controlplane.api.errors import ApiError, audit_unavailable_error
from controlplane.core.keycache import AuthFailed, KeyPrincipal
from controlplane.exchange import GatewayServices
from controlplane.operations import AdminContext

T = TypeVar("T")

Role = Literal["admin", "auditor"]


@dataclass(frozen=True)
class Principal:
    """Who calls the admin API: `name` goes into audit events as the actor."""

    name: str
    role: Role


async def get_services(request: Request) -> GatewayServices:
    # async on purpose: FastAPI runs sync dependencies in a worker thread, a needless hop.
    services: GatewayServices = request.app.state.gateway
    return services


ServicesDep = Annotated[GatewayServices, Depends(get_services)]


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


async def tenant_key(request: Request) -> KeyPrincipal:
    services: GatewayServices = request.app.state.gateway
    try:
        return await request.app.state.authenticator.authenticate(bearer_token(request))
    except AuthFailed as failure:
        services.metrics.auth_failures.labels(failure.code).inc()
        headers = {"WWW-Authenticate": "Bearer"} if failure.status == 401 else None
        raise ApiError(
            failure.status, failure.message, code=failure.code, headers=headers
        ) from None


TenantKeyDep = Annotated[KeyPrincipal, Depends(tenant_key)]


async def current_principal(request: Request) -> Principal:
    """The admin API's caller: the holder of SPARKPLANE_ADMIN_TOKEN (people use the console)."""
    admin_token = request.app.state.settings.admin_token
    if admin_token is None:
        raise ApiError(
            401,
            "the admin API is off: set SPARKPLANE_ADMIN_TOKEN, or use the console",
            code="admin_api_disabled",
        )
    token = bearer_token(request)
    if token is None:
        raise ApiError(
            401,
            "send 'Authorization: Bearer <admin token>'",
            code="not_authenticated",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(token.encode(), admin_token.get_secret_value().encode()):
        raise ApiError(
            401,
            "the admin token is not valid",
            code="invalid_admin_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Principal(name="admin-token", role="admin")


async def current_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if principal.role != "admin":
        raise ApiError(
            403,
            f"role {principal.role!r} may not change tenants or keys",
            code="admin_role_required",
        )
    return principal


async def audit_writable(request: Request) -> None:
    """Refuse a change up front when it could not be audited (fail closed)."""
    if not getattr(request.app.state.gateway.audit, "healthy", True):
        raise audit_unavailable_error()


ReaderDep = Annotated[Principal, Depends(current_principal)]
CurrentAdmin = Annotated[Principal, Depends(current_admin)]
AuditWritable = Depends(audit_writable)


def admin_context(request: Request, actor: Principal) -> AdminContext:
    state = request.app.state
    return AdminContext(state.sessions, state.pepper, state.gateway.audit, actor.name, actor.role)
