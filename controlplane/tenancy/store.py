"""Tenant and key operations shared by the admin API, the CLI and `sparkplane demo`.

Every function takes an open SQLAlchemy session and commits its own change together with a bump
of the auth epoch, so every gateway replica sees the change on its next request.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.core.db import utcnow
from controlplane.core.errors import DomainError
from controlplane.core.security import generate_api_key, hash_api_key, visible_prefix
from controlplane.tenancy.epoch import bump_epoch_file
from controlplane.tenancy.models import (
    KEY_EXPIRY_RULE,
    MAX_KEY_DAYS,
    MIN_KEY_DAYS,
    ApiKey,
    ApiKeyPublic,
    AuthEpoch,
    DailyUsage,
    Tenant,
    TenantCreate,
    TenantPublic,
    TenantUpdate,
)


class ServiceError(DomainError):
    """A request the data does not allow; `code` is machine-readable, the message is for people."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param=param)


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class InvalidKeyExpiry(ServiceError):
    code = "invalid_expiry"


_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


def key_expiry_days(value: object) -> int | None:
    """A key's lifetime in days, or None for never: the one rule of every way to create a key.
    `value` is the API's `expires_days` as sent (null: never); the CLI's and the console's text
    comes through `key_expiry_from_text`. Only a whole number in range passes: 1.5, "30" and
    `true` (a bool is an int to Python) are refused with the same sentence as 0."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 30.0 is a whole number, an "integer" to the API's JSON Schema too
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and MIN_KEY_DAYS <= value <= MAX_KEY_DAYS
    ):
        return value
    raise InvalidKeyExpiry(f"expires_days: {KEY_EXPIRY_RULE}", param="expires_days")


def key_expiry_from_text(text: str) -> int | None:
    """The lifetime typed in the CLI or the console: a number of days, or "never" or nothing."""
    text = text.strip().lower()
    if text in ("", "never", "none"):
        return None
    # Anything but ASCII digits stays text, which the rule refuses ("1.5", "soon", "²").
    return key_expiry_days(int(text) if _WHOLE_NUMBER.fullmatch(text) else text)


def commit_auth_change(session: Session) -> None:
    """Commit a key or tenant change, then tell every gateway's key cache (see keycache.py)."""
    bump_auth_epoch(session)
    session.commit()
    bump_epoch_file(session.get_bind().engine.url)


def bump_auth_epoch(session: Session) -> None:
    updated = session.execute(
        update(AuthEpoch).where(AuthEpoch.id == 1).values(value=AuthEpoch.value + 1)
    )
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        session.add(AuthEpoch(id=1, value=1))


def tenant_public(tenant: Tenant) -> TenantPublic:
    return TenantPublic.model_validate(tenant)


def key_public(key: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=key.id,
        tenant=key.tenant.name,
        name=key.name,
        prefix=key.prefix,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    )


def get_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFound(f"tenant {name!r} does not exist", param="tenant")
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.name)))


def retention_policies(session: Session) -> dict[str, int]:
    """Every tenant's audit retention in days (the scheduled retention job applies them)."""
    rows = session.execute(select(Tenant.name, Tenant.__table__.c.retention_days))
    return {name: days for name, days in rows}


def create_tenant(session: Session, spec: TenantCreate, *, system: bool = False) -> Tenant:
    """`system` is set only by the installer's CLI, never through the admin API or console."""
    if session.scalar(select(Tenant.id).where(Tenant.name == spec.name)) is not None:
        raise Conflict(f"tenant {spec.name!r} already exists", param="name")
    tenant = Tenant(**spec.model_dump(), system=system)
    session.add(tenant)
    try:
        commit_auth_change(session)
    except IntegrityError as exc:  # a concurrent create of the same name on another replica
        session.rollback()
        raise Conflict(f"tenant {spec.name!r} already exists", param="name") from exc
    return tenant


def update_tenant(
    session: Session, name: str, changes: TenantUpdate
) -> tuple[TenantPublic, Tenant]:
    """Apply the fields set in `changes`; returns (before, tenant after)."""
    tenant = get_tenant(session, name)
    if tenant.system and changes.disabled:
        raise Conflict(
            f"tenant {name!r} is the appliance's system tenant (validate, upgrade health check): "
            "it cannot be disabled; revoke its keys instead",
            param="tenant",
        )
    before = tenant_public(tenant)
    for field, value in changes.model_dump(exclude_unset=True).items():
        setattr(tenant, field, value)
    commit_auth_change(session)
    return before, tenant


def set_tenant_disabled(session: Session, name: str, disabled: bool) -> tuple[TenantPublic, Tenant]:
    return update_tenant(session, name, TenantUpdate(disabled=disabled))


def issue_key(
    session: Session,
    pepper: bytes,
    tenant_name: str,
    *,
    name: str = "",
    expires_days: int | None = None,
) -> tuple[ApiKey, str]:
    """Create a key for the tenant; returns the row and the secret (shown once, never stored)."""
    tenant = get_tenant(session, tenant_name)
    if tenant.disabled:
        raise Conflict(f"tenant {tenant_name!r} is disabled: enable it first", param="tenant")
    expires_days = key_expiry_days(expires_days)
    secret = generate_api_key()
    # One clock for both, so that the lifetime reads back as whole days (the console's rotate).
    created_at = utcnow()
    expires_at = created_at + timedelta(days=expires_days) if expires_days else None
    key = ApiKey(
        tenant=tenant,
        name=name,
        prefix=visible_prefix(secret),
        key_hash=hash_api_key(pepper, secret),
        created_at=created_at,
        expires_at=expires_at,
    )
    session.add(key)
    commit_auth_change(session)
    return key, secret


def list_keys(session: Session, tenant_name: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id)
    if tenant_name is not None:
        query = query.where(ApiKey.tenant_id == get_tenant(session, tenant_name).id)
    return list(session.scalars(query))


def get_key(session: Session, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"key {key_id} does not exist", param="key_id")
    return key


def revoke_key(session: Session, key_id: int) -> tuple[ApiKeyPublic, ApiKey]:
    """Revoke a key (idempotent: revoking twice keeps the first time)."""
    key = get_key(session, key_id)
    before = key_public(key)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        commit_auth_change(session)
    return before, key


def tenant_usage(session: Session, tenant_name: str, days: int = 31) -> list[Any]:
    """Per UTC day: requests and tokens over all keys and models (estimated included)."""
    tenant = get_tenant(session, tenant_name)
    since = utcnow().date() - timedelta(days=days - 1)
    query = (
        select(
            DailyUsage.day,
            func.sum(DailyUsage.requests).label("requests"),
            func.sum(DailyUsage.prompt_tokens).label("prompt_tokens"),
            func.sum(DailyUsage.completion_tokens).label("completion_tokens"),
        )
        .where(DailyUsage.tenant_id == tenant.id, DailyUsage.day >= since)
        .group_by(DailyUsage.day)
        .order_by(DailyUsage.day)
    )
    return list(session.execute(query))


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The `{field: [old, new]}` pairs that differ: what an admin audit event records."""
    return {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
