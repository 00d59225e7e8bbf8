"""Server-side console sessions with idle and absolute expiry, and their CSRF tokens.

The cookie carries a random token; the database keeps only its SHA-256, so a copy of the
database does not let anyone sign in. Each session has its own CSRF token (synchroniser
pattern), compared in constant time on every state-changing request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from controlplane.console.models import AdminUser, ConsoleSession
from controlplane.core.db import utcnow

# Writing last_seen_at on every page view would turn reads into writes; a minute is precise
# enough for an idle timeout counted in minutes.
TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True)
class SessionPolicy:
    idle_timeout: timedelta = timedelta(minutes=30)
    absolute_timeout: timedelta = timedelta(hours=12)


@dataclass(frozen=True)
class ActiveSession:
    """What a request needs to know about its signed-in user (detached from the DB session)."""

    token_hash: str
    user_id: int
    username: str
    role: str
    csrf_token: str
    must_change_password: bool
    source: str = "local"  # local, ldap or oidc: sign-out also ends an OIDC provider session


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def start_session(
    db: Session, user: AdminUser, policy: SessionPolicy, client_address: str = ""
) -> str:
    """Create a session for `user`, return the cookie token (the caller commits)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    db.add(
        ConsoleSession(
            token_hash=hash_token(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.absolute_timeout,
            client_address=client_address[:64],
        )
    )
    return token


def load_session(
    db: Session, token: str | None, policy: SessionPolicy, now: datetime | None = None
) -> ActiveSession | None:
    """Return the live session for a cookie token, ending it if idle or past its lifetime."""
    if not token:
        return None
    now = now or utcnow()
    row = db.get(ConsoleSession, hash_token(token))
    if row is None:
        return None
    user = row.user
    idle_deadline = row.last_seen_at + policy.idle_timeout
    if now >= row.expires_at or now >= idle_deadline or user.disabled:
        db.delete(row)
        db.commit()
        return None
    if now - row.last_seen_at >= TOUCH_INTERVAL:
        row.last_seen_at = now
        db.commit()
    return ActiveSession(
        token_hash=row.token_hash,
        user_id=user.id,
        username=user.username,
        role=user.role,
        csrf_token=row.csrf_token,
        must_change_password=user.must_change_password and user.is_local,
        source=user.source or "local",
    )


def end_session(db: Session, token_hash: str) -> None:
    db.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash))


def end_user_sessions(db: Session, user_id: int, keep_token_hash: str | None = None) -> None:
    """Sign a user out everywhere (password change, disable), optionally keeping one session."""
    query = delete(ConsoleSession).where(ConsoleSession.user_id == user_id)
    if keep_token_hash is not None:
        query = query.where(ConsoleSession.token_hash != keep_token_hash)
    db.execute(query)


def purge_expired(db: Session, policy: SessionPolicy, now: datetime | None = None) -> int:
    """Delete sessions past either deadline; returns how many were removed."""
    now = now or utcnow()
    stale = select(ConsoleSession.token_hash).where(
        (ConsoleSession.expires_at <= now)
        | (ConsoleSession.last_seen_at <= now - policy.idle_timeout)
    )
    hashes = list(db.scalars(stale))
    if hashes:
        db.execute(delete(ConsoleSession).where(ConsoleSession.token_hash.in_(hashes)))
    return len(hashes)
