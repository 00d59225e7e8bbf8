"""Local admin users: argon2id password hashing, first-admin creation, password sign-in.

Everything here is synchronous (SQLAlchemy session + CPU-bound argon2); the async routes call it
through a worker thread so a sign-in never stalls the gateway's event loop.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.console.models import AdminUser, Role, Source
from controlplane.core.db import utcnow

MIN_PASSWORD_LENGTH = 12
USERNAME_ALPHABET = set("abcdefghijklmnopqrstuvwxyz0123456789._-")

# argon2-cffi's default is RFC 9106's second recommended profile: argon2id, 64 MiB, t=3, p=4.
_hasher = PasswordHasher()
# Each hash takes 64 MiB: cap how many run at once so a burst of sign-ins cannot eat the box's
# memory (the worker thread pool alone would allow 40).
_hash_slots = threading.BoundedSemaphore(4)


class ConsoleAuthError(ValueError):
    """Bad input to an admin-user operation; the message is safe to show."""


class SignInOutcome(StrEnum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    DISABLED = "disabled"


@dataclass(frozen=True)
class SignInResult:
    outcome: SignInOutcome
    user_id: int | None = None
    username: str = ""


def hash_password(password: str) -> str:
    with _hash_slots:
        return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        with _hash_slots:
            return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Verifying against this for unknown users keeps their timing equal to known ones.
    return hash_password(secrets.token_urlsafe(16))


def generate_password() -> str:
    """A one-time password: 144 bits, URL-safe, easy to paste."""
    return secrets.token_urlsafe(18)


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not 2 <= len(name) <= 64 or not set(name) <= USERNAME_ALPHABET:
        raise ConsoleAuthError("username must be 2-64 characters of a-z, 0-9, '.', '_' or '-'")
    return name


def check_password_policy(username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConsoleAuthError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if username.lower() in password.lower():
        raise ConsoleAuthError("password must not contain the username")


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise ConsoleAuthError(f"role must be one of {', '.join(r.value for r in Role)}") from None


def find_user(session: Session, username: str) -> AdminUser | None:
    return session.scalar(select(AdminUser).where(AdminUser.username == username.strip().lower()))


def create_admin(session: Session, username: str, role: str, password: str | None = None) -> str:
    """Create a console user and return its password.

    Without `password` a one-time password is generated and the user must change it at first
    sign-in (the installer's first admin). The caller commits the session.
    """
    name = normalise_username(username)
    parsed_role = parse_role(role)
    if find_user(session, name) is not None:
        raise ConsoleAuthError(f"user {name!r} already exists")
    one_time = password is None
    secret = generate_password() if password is None else password
    if not one_time:
        check_password_policy(name, secret)
    session.add(
        AdminUser(
            username=name,
            role=parsed_role.value,
            password_hash=hash_password(secret),
            must_change_password=one_time,
            source=Source.LOCAL.value,
        )
    )
    session.flush()
    return secret


def reset_password(session: Session, user: AdminUser) -> str:
    """Give `user` a new one-time password and end its sessions."""
    if not user.is_local:
        raise ConsoleAuthError(f"{user.username} signs in through the directory: no password here")
    secret = generate_password()
    user.password_hash = hash_password(secret)
    user.must_change_password = True
    user.password_changed_at = utcnow()
    user.sessions.clear()
    return secret


def change_password(session: Session, user: AdminUser, current: str, new: str) -> None:
    if not user.is_local:
        raise ConsoleAuthError("directory accounts change their password in the directory")
    if not verify_password(user.password_hash, current):
        raise ConsoleAuthError("current password is wrong")
    if new == current:
        raise ConsoleAuthError("the new password must differ from the current one")
    check_password_policy(user.username, new)
    user.password_hash = hash_password(new)
    user.must_change_password = False
    user.password_changed_at = utcnow()


def authenticate(
    session: Session, username: str, password: str, now: datetime | None = None
) -> SignInResult:
    """Check a local sign-in; every outcome costs one argon2 verification (the caller commits).

    Throttling is not done here but by address (console/throttle.py): a count per account
    would let anyone lock its owner out.
    """
    user = find_user(session, username)
    if user is None or not user.is_local:
        # Same work as for a real account: the answer's timing must not tell who exists.
        verify_password(_dummy_hash(), password)
        return SignInResult(SignInOutcome.BAD_CREDENTIALS, username=username.strip().lower())
    if not verify_password(user.password_hash, password):
        return SignInResult(SignInOutcome.BAD_CREDENTIALS, user.id, user.username)
    if user.disabled:
        return SignInResult(SignInOutcome.DISABLED, user.id, user.username)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_signin_at = now or utcnow()
    return SignInResult(SignInOutcome.OK, user.id, user.username)
