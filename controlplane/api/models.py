"""Tables of the HTTP edge: failed authentication per client address, and admin API tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.core.db import Base, UtcDateTime, utcnow


class AuthFailureCount(Base):
    """Refused credentials of one client address in its current window, shared by replicas."""

    __tablename__ = "auth_failure_counts"

    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class AdminToken(Base):
    """A bearer token of the admin API with its role; only the token's HMAC is stored.

    `sparkplane admin-token rotate` revokes the name's current token and writes a new one; a
    revoked row also retires a SPARKPLANE_ADMIN_TOKEN that the rotation replaced."""

    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
