"""Server-side sessions: token hashing, idle and absolute expiry, sign-out everywhere."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from controlplane.console.auth import create_admin, find_user
from controlplane.console.models import ConsoleSession
from controlplane.console.sessions import (
    SessionPolicy,
    end_user_sessions,
    hash_token,
    load_session,
    purge_expired,
    start_session,
    tokens_match,
)
from controlplane.core.db import utcnow

POLICY = SessionPolicy(idle_timeout=timedelta(minutes=30), absolute_timeout=timedelta(hours=12))


def _signed_in(db: Session, name: str = "ivy") -> str:
    create_admin(db, name, "admin")
    user = find_user(db, name)
    assert user is not None
    token = start_session(db, user, POLICY, "127.0.0.1")
    db.commit()
    return token


def test_only_the_token_hash_is_stored(db: Session) -> None:
    token = _signed_in(db)
    row = db.get(ConsoleSession, hash_token(token))
    assert row is not None and row.token_hash != token
    active = load_session(db, token, POLICY)
    assert active is not None and active.username == "ivy" and active.must_change_password
    assert len(active.csrf_token) >= 32
    assert load_session(db, token + "x", POLICY) is None
    assert load_session(db, None, POLICY) is None


def test_idle_expiry_ends_the_session(db: Session) -> None:
    token = _signed_in(db)
    later = utcnow() + POLICY.idle_timeout + timedelta(seconds=1)
    assert load_session(db, token, POLICY, now=later) is None
    assert load_session(db, token, POLICY) is None  # deleted, not just hidden


def test_activity_extends_idle_but_not_absolute_expiry(db: Session) -> None:
    token = _signed_in(db)
    start = utcnow()
    moment = start
    # Keep the session busy every 20 minutes: idle never runs out ...
    while moment < start + POLICY.absolute_timeout - timedelta(minutes=20):
        moment += timedelta(minutes=20)
        assert load_session(db, token, POLICY, now=moment) is not None
    # ... but the absolute lifetime does.
    assert load_session(db, token, POLICY, now=start + POLICY.absolute_timeout) is None


def test_disabled_user_loses_the_session(db: Session) -> None:
    token = _signed_in(db)
    user = find_user(db, "ivy")
    assert user is not None
    user.disabled = True
    db.commit()
    assert load_session(db, token, POLICY) is None


def test_end_user_sessions_keeps_the_current_one(db: Session) -> None:
    token = _signed_in(db)
    user = find_user(db, "ivy")
    assert user is not None
    other = start_session(db, user, POLICY)
    db.commit()
    end_user_sessions(db, user.id, keep_token_hash=hash_token(token))
    db.commit()
    assert load_session(db, token, POLICY) is not None
    assert load_session(db, other, POLICY) is None


def test_purge_expired(db: Session) -> None:
    _signed_in(db)
    assert purge_expired(db, POLICY) == 0
    assert purge_expired(db, POLICY, now=utcnow() + timedelta(hours=13)) == 1


def test_tokens_match() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd")
    assert not tokens_match("abc", None)
    assert not tokens_match("abc", "")
