"""Console tables: admin users and their server-side sessions, on the shared `Base`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.core.db import Base, UtcDateTime, utcnow


class Role(StrEnum):
    """`admin` manages tenants and keys; `auditor` reads usage and audit and exports."""

    ADMIN = "admin"
    AUDITOR = "auditor"


class AdminUser(Base):
    """A person who signs in to the console."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    # Set for installer-created and reset accounts: the one-time password must be replaced.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_signin_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    sessions: Mapped[list[ConsoleSession]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )


class ConsoleSession(Base):
    """A signed-in browser. Only the SHA-256 of the cookie token is stored."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    client_address: Mapped[str] = mapped_column(String(64), default="")

    user: Mapped[AdminUser] = relationship(back_populates="sessions")
