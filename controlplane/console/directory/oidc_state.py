"""The state, nonce and PKCE verifier of OpenID Connect sign-ins under way, each usable once.

`begin` stores them (hashed state, hashed browser cookie) and returns the secrets for the
redirect; `consume` deletes the row as it reads it, so a replayed callback finds nothing, on
whichever replica it lands, and a callback from another browser than the one that started the
sign-in (login CSRF) does not match.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from controlplane.console.models import OidcLogin
from controlplane.console.sessions import hash_token, tokens_match
from controlplane.core.db import utcnow

LOGIN_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class PendingLogin:
    state: str
    nonce: str
    code_verifier: str
    browser_token: str  # goes into the browser's cookie


def begin(db: Session, next_path: str, now: datetime | None = None) -> PendingLogin:
    now = now or utcnow()
    pending = PendingLogin(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                           secrets.token_urlsafe(64), secrets.token_urlsafe(32))  # fmt: skip
    db.execute(delete(OidcLogin).where(OidcLogin.created_at < now - LOGIN_TTL))
    db.add(OidcLogin(state_hash=hash_token(pending.state),
                     browser_hash=hash_token(pending.browser_token), nonce=pending.nonce,
                     code_verifier=pending.code_verifier, next_path=next_path[:512],
                     created_at=now))  # fmt: skip
    db.commit()
    return pending


def consume(
    db: Session, state: str, browser_token: str, now: datetime | None = None
) -> OidcLogin | None:
    """The sign-in `state` belongs to, once; None if unknown, used, expired or another
    browser's (commits)."""
    if not state:
        return None
    now = now or utcnow()
    row = db.get(OidcLogin, hash_token(state))
    if row is None:
        return None
    deleted = db.execute(delete(OidcLogin).where(OidcLogin.state_hash == row.state_hash))
    db.commit()
    if getattr(deleted, "rowcount", 0) != 1:
        return None  # another request consumed it first
    if now - row.created_at > LOGIN_TTL or not tokens_match(
        row.browser_hash, hash_token(browser_token)
    ):
        return None
    return row
