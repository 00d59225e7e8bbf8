"""Tenants, API keys and usage tables, with the pydantic schemas of the admin API."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model
from sqlalchemy import BigInteger, Boolean, Date, ForeignKey, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.core.db import Base, UtcDateTime, utcnow
from controlplane.tenancy.limits import LIMITS, TenantLimits

TENANT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_TENANT_NAME_RE = re.compile(TENANT_NAME_PATTERN)


class Tenant(Base):
    """A tenant; its limit columns (one per field of `TenantLimits`) are added below."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The appliance's own tenant (`sparkplane validate`, the upgrade health check): audited like
    # any other, left out of usage totals and capacity shares, never disabled.
    system: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant")


for _field in LIMITS:
    setattr(Tenant, _field.name, _field.column())


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    tenant: Mapped[Tenant] = relationship(back_populates="keys")


class AuthEpoch(Base):
    """One row whose counter every key or tenant change bumps in the same transaction.

    Gateways compare it with the value their key cache was filled at: one indexed read per
    request instead of a key lookup, and a revocation is seen by the next request on every replica.
    """

    __tablename__ = "auth_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


UNKNOWN_KEY = 0  # usage counted before keys were recorded (revision 0005): key unknown


class DailyUsage(Base):
    """Tokens per tenant, key, model and UTC day, the estimated ones apart (cancelled streams
    without a usage chunk); quotas, `sparkplane usage` and the console's usage page read it."""

    __tablename__ = "usage_daily"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer, primary_key=True, default=UNKNOWN_KEY)
    model: Mapped[str] = mapped_column(String(200), primary_key=True, default="")
    estimated: Mapped[bool] = mapped_column(Boolean, primary_key=True, default=False)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


# ---- admin API schemas -------------------------------------------------------------------


class TenantCreate(TenantLimits):
    name: str = Field(pattern=TENANT_NAME_PATTERN, description="lower-case letters, digits, - _")


# Fields whose null would be ambiguous in an update (no "unlimited" meaning): given or absent.
NOT_NULLABLE = (*(field.name for field in LIMITS if not field.optional), "disabled")


def _drop_null_from_schema(schema: dict[str, Any]) -> None:
    """Document the fields of NOT_NULLABLE as non-null (their None means "not given")."""
    for name in NOT_NULLABLE:
        prop = schema.get("properties", {}).get(name, {})
        branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
        if branches:
            prop.update(branches[0])
        prop.pop("default", None)


def _not_null(value: object) -> object:
    # These columns have no "unlimited" meaning: null would be ambiguous.
    if value is None:
        raise ValueError("may not be null")
    return value


class _TenantUpdateBase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_drop_null_from_schema)


def _update_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for field in LIMITS:
        annotation = field.update_annotation()
        if not field.optional:
            annotation = Annotated[annotation, BeforeValidator(_not_null)]
        fields[field.name] = (annotation, None)
    return fields


# Every limit, optional: made from TenantLimits, so a new limit is in it too.
_TenantUpdateLimits: Any = create_model(
    "TenantUpdate", __base__=_TenantUpdateBase, __module__=__name__, **_update_fields()
)


class TenantUpdate(_TenantUpdateLimits):
    """Only the fields given are changed; `null` clears an optional limit (rpm, quotas, ...)."""

    disabled: Annotated[bool | None, BeforeValidator(_not_null)] = None


class TenantPublic(TenantLimits):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    disabled: bool
    system: bool = False
    created_at: datetime
    updated_at: datetime


MIN_KEY_DAYS, MAX_KEY_DAYS = 1, 3650
KEY_EXPIRY_RULE = f"a key expires after {MIN_KEY_DAYS} to {MAX_KEY_DAYS} days, or never"
_WHOLE_DAYS_OR_NULL: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "null"}]}


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(pattern=TENANT_NAME_PATTERN)
    name: str = Field(default="", max_length=100)
    # Taken as sent and checked by `store.key_expiry_days` (the one rule for the CLI, console and
    # API), so that every entry point refuses with the same words: as `int`, pydantic would make
    # `true` a 1-day key and answer 1.5 or "soon" with a 422 of its own.
    expires_days: Annotated[object, WithJsonSchema(_WHOLE_DAYS_OR_NULL)] = Field(
        default=None,
        description=KEY_EXPIRY_RULE + " (null: never)",
        json_schema_extra={"minimum": MIN_KEY_DAYS, "maximum": MAX_KEY_DAYS},
    )


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    tenant: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the secret; shown only in this response")


class DailyUsagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    day: date
    requests: int
    prompt_tokens: int
    completion_tokens: int


def is_valid_tenant_name(name: str) -> bool:
    return bool(_TENANT_NAME_RE.match(name))
