"""Console user administration shared by the Admin users page and `sparkplane admins`.

Each operation first makes sure the audit store can be written (fail closed: a change that could
not be audited is refused before it is made), commits its change, then writes one
`admin.user_<action>` audit event through the same AdminContext the tenant operations use.
Secrets (passwords) never enter the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from controlplane.console import throttle
from controlplane.console.auth import (
    ConsoleAuthError,
    create_admin,
    find_user,
    normalise_username,
    parse_role,
    reset_password,
)
from controlplane.console.models import AdminUser, Role, Source
from controlplane.tenancy.actions import AdminContext


@dataclass(frozen=True)
class UserView:
    """One row of the Admin users page and of `sparkplane admins list`."""

    id: int
    username: str
    role: str
    source: str
    external_id: str
    disabled: bool
    must_change_password: bool
    throttled: bool
    created_at: datetime
    last_signin_at: datetime | None
    last_signin_address: str

    @property
    def local(self) -> bool:
        return self.source == Source.LOCAL


def user_view(user: AdminUser, throttled: bool = False) -> UserView:
    return UserView(
        user.id, user.username, user.role, user.source or Source.LOCAL.value,
        user.external_id or "", user.disabled, user.must_change_password and user.is_local,
        throttled, user.created_at, user.last_signin_at, user.last_signin_address or "",
    )  # fmt: skip


def list_users(db: Session) -> list[UserView]:
    blocked = throttle.blocked_accounts(db)
    users = db.scalars(select(AdminUser).order_by(AdminUser.username))
    return [user_view(u, throttle.account_key(u.username) in blocked) for u in users]


def _name(username: str) -> str:
    """A user's name as stored: local names are validated at creation, `ldap:`/`oidc:` names
    come from the directory."""
    return username.strip().lower()


def _existing(db: Session, username: str) -> AdminUser:
    user = find_user(db, _name(username))
    if user is None:
        raise ConsoleAuthError(f"user {username!r} does not exist")
    return user


def _local_admins(db: Session) -> int:
    """Enabled local admins, locked until the caller's commit: a no-op update of their rows
    takes PostgreSQL's row locks and SQLite's write lock, so a second demotion at the same time
    waits, then counts again without the first."""
    enabled_local_admin = (
        AdminUser.role == Role.ADMIN,
        AdminUser.disabled.is_(False),
        AdminUser.source.is_(None) | (AdminUser.source == Source.LOCAL),
    )
    db.execute(update(AdminUser).where(*enabled_local_admin).values(role=AdminUser.role))
    return int(db.scalar(select(func.count()).where(*enabled_local_admin)) or 0)


def _guard_last_admin(db: Session, user: AdminUser) -> None:
    # Break-glass: one enabled local admin always remains, whatever the directory does;
    # without one, only the installer's shell could recover the console.
    if user.is_local and user.role == Role.ADMIN and not user.disabled and _local_admins(db) <= 1:
        raise ConsoleAuthError("this is the last enabled local admin; create another first")


async def _record(ctx: AdminContext, action: str, username: str, **fields: Any) -> None:
    await ctx.audit.record_change(f"admin.user_{action}", actor=ctx.actor,
                                  actor_role=ctx.actor_role, target=f"user:{username}",
                                  **fields)  # fmt: skip


async def create_user(ctx: AdminContext, username: str, role: str,
                      password: str | None = None) -> str:  # fmt: skip
    """Create a user; returns the password (a generated one-time one when none is given)."""
    ctx.ensure_audit_writable()

    def work(db: Session) -> str:
        secret = create_admin(db, username, role, password)
        db.commit()
        return secret

    secret = await ctx.run(work)
    await _record(ctx, "create", normalise_username(username), role=parse_role(role).value,
                  one_time_password=password is None)  # fmt: skip
    return secret


async def reset_user_password(ctx: AdminContext, username: str) -> str:
    """New one-time password; signs the account out everywhere."""
    ctx.ensure_audit_writable()

    def work(db: Session) -> str:
        secret = reset_password(db, _existing(db, username))
        db.commit()
        return secret

    secret = await ctx.run(work)
    await _record(ctx, "password_reset", _name(username))
    return secret


async def set_role(ctx: AdminContext, username: str, role: str) -> None:
    ctx.ensure_audit_writable()
    new_role = parse_role(role).value

    def work(db: Session) -> str:
        user = _existing(db, username)
        if not user.is_local:
            raise ConsoleAuthError(
                f"{user.username}'s role comes from its directory groups; change them there"
            )
        before = user.role
        if before != new_role:
            _guard_last_admin(db, user)
            user.role = new_role
            user.sessions.clear()  # the new role applies from the next sign-in
            db.commit()
        return before

    before = await ctx.run(work)
    if before != new_role:
        await _record(ctx, "role_change", _name(username),
                      before={"role": before}, after={"role": new_role})  # fmt: skip


async def set_disabled(ctx: AdminContext, username: str, disabled: bool) -> None:
    ctx.ensure_audit_writable()

    def work(db: Session) -> bool:
        user = _existing(db, username)
        if user.disabled == disabled:
            return False
        if disabled:
            _guard_last_admin(db, user)
            user.sessions.clear()
        user.disabled = disabled
        db.commit()
        return True

    if await ctx.run(work):
        await _record(ctx, "disable" if disabled else "enable", _name(username))


async def unlock_user(ctx: AdminContext, username: str) -> None:
    """Lift the sign-in throttle on an account from every address."""
    ctx.ensure_audit_writable()

    def work(db: Session) -> None:
        throttle.forget_account(db, _existing(db, username).username)
        db.commit()

    await ctx.run(work)
    await _record(ctx, "unlock", _name(username))
