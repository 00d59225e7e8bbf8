"""Console tables: admin users, their server-side sessions and the sign-in throttle."""

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


class Source(StrEnum):
    """Where an account comes from: a local password, or the site's directory."""

    LOCAL = "local"
    LDAP = "ldap"
    OIDC = "oidc"


class AdminUser(Base):
    """A person who signs in to the console.

    Directory (LDAP, OIDC) users get a row at their first sign-in, named `ldap:NAME` or
    `oidc:NAME` so that they never collide with a local account; their role is the one their
    groups gave them at their last sign-in, and they have no usable password.
    """

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    # Set for installer-created and reset accounts: the one-time password must be replaced.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # No longer written: the per-account lockout gave way to the address throttle
    # (console/throttle.py). Kept because installed databases have them NOT NULL.
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_signin_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_signin_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # NULL for accounts made before directories existed: those are local.
    source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The directory's identity: the LDAP DN, or the OIDC issuer and subject.
    external_id: Mapped[str | None] = mapped_column(String(512), nullable=True)

    @property
    def is_local(self) -> bool:
        return self.source in (None, Source.LOCAL)

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


class SignInFailure(Base):
    """Failed sign-ins of one address (`account` empty) or one address + typed account name."""

    __tablename__ = "signin_failures"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    account: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class OidcLogin(Base):
    """An OpenID Connect sign-in under way: its state, nonce and PKCE verifier, used once.

    Kept in the database so that the provider's redirect may land on any replica; only the
    SHA-256 of the state and of the browser's cookie are stored.
    """

    __tablename__ = "oidc_logins"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_hash: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    next_path: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
