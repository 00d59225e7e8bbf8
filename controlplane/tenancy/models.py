"""Tenants, API keys and usage tables, with the pydantic schemas of the admin API."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.core.db import Base, UtcDateTime, utcnow

TENANT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_TENANT_NAME_RE = re.compile(TENANT_NAME_PATTERN)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    max_concurrency: Mapped[int] = mapped_column(Integer, default=8)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    daily_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    monthly_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Added by revision 0001 (core/migrations/versions): prompt + completion tokens of one request.
    max_context_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    allowed_models: Mapped[list[str]] = mapped_column(JSON, default=list)
    queue_size: Mapped[int] = mapped_column(Integer, default=64)
    queue_timeout: Mapped[float] = mapped_column(Float, default=30.0)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    retention_days: Mapped[int] = mapped_column(Integer, default=365)
    capture_content: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant")


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


class DailyUsage(Base):
    """Tokens per tenant and UTC day; quotas and the console's usage page read it."""

    __tablename__ = "usage_daily"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


# ---- admin API schemas -------------------------------------------------------------------

# rpm, max_tokens, max_context_tokens: a 32-bit column
PositiveInt = Annotated[int, Field(ge=1, le=2**31 - 1)]
TokenCount = Annotated[int, Field(ge=1, le=10**15)]  # tpm and quotas: a 64-bit column
ModelName = Annotated[str, Field(min_length=1, max_length=200)]


class TenantLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_concurrency: int = Field(
        default=8, ge=1, le=10_000, description="hard cap on requests in flight"
    )
    weight: float = Field(
        default=1.0, gt=0, le=1000, description="share of engine capacity under load"
    )
    rpm: PositiveInt | None = Field(default=None, description="requests per minute")
    tpm: TokenCount | None = Field(default=None, description="tokens per minute")
    daily_tokens: TokenCount | None = None
    monthly_tokens: TokenCount | None = None
    max_tokens: PositiveInt | None = Field(
        default=None, description="cap on a request's max_tokens"
    )
    max_context_tokens: PositiveInt | None = Field(
        default=None,
        description="cap on a request's prompt + completion tokens (counted by the engine)",
    )
    allowed_models: list[ModelName] = Field(default_factory=list, description="empty = all")
    queue_size: int = Field(default=64, ge=0, le=100_000)
    queue_timeout: float = Field(
        default=30.0, ge=0, le=3600, description="seconds a request may wait"
    )
    retention_days: int = Field(default=365, ge=1, le=36_500)
    capture_content: bool = False


class TenantCreate(TenantLimits):
    name: str = Field(pattern=TENANT_NAME_PATTERN, description="lower-case letters, digits, - _")


NOT_NULLABLE = (
    "max_concurrency",
    "weight",
    "allowed_models",
    "queue_size",
    "queue_timeout",
    "retention_days",
    "capture_content",
    "disabled",
)


def _drop_null_from_schema(schema: dict[str, Any]) -> None:
    """Document the fields of NOT_NULLABLE as non-null (their None means "not given")."""
    for name in NOT_NULLABLE:
        prop = schema.get("properties", {}).get(name, {})
        branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
        if branches:
            prop.update(branches[0])
        prop.pop("default", None)


class TenantUpdate(BaseModel):
    """Only the fields given are changed; `null` clears an optional limit (rpm, quotas, ...)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_drop_null_from_schema)

    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    weight: float | None = Field(default=None, gt=0, le=1000)
    rpm: PositiveInt | None = None
    tpm: TokenCount | None = None
    daily_tokens: TokenCount | None = None
    monthly_tokens: TokenCount | None = None
    max_tokens: PositiveInt | None = None
    max_context_tokens: PositiveInt | None = None
    allowed_models: list[ModelName] | None = None
    queue_size: int | None = Field(default=None, ge=0, le=100_000)
    queue_timeout: float | None = Field(default=None, ge=0, le=3600)
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
    capture_content: bool | None = None
    disabled: bool | None = None

    @field_validator(*NOT_NULLABLE, mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # These columns have no "unlimited" meaning: null would be ambiguous.
        if value is None:
            raise ValueError("may not be null")
        return value


class TenantPublic(TenantLimits):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    disabled: bool
    created_at: datetime
    updated_at: datetime


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(pattern=TENANT_NAME_PATTERN)
    name: str = Field(default="", max_length=100)
    expires_days: int | None = Field(default=None, ge=1, le=3650)


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
