"""Sign-in throttling by client address and by address + account, kept in the database.

Following OWASP's Authentication Cheat Sheet: no account lockout that anyone can trigger (five
wrong passwords from anywhere used to lock `admin` for 15 minutes); instead growing delays per
(address, account) and per address, shared by every replica through the database. An address
guessing one account's password waits after its 5th failure, an address trying many accounts
after its 10th; the delay doubles with each further failure (5 s, 10 s, 20 s ... 15 min) and a count
is forgotten an hour after its last failure. The owner signing in from another address is not
affected, and the answers are the same whether the account exists or not.

Every attempt is charged *before* the password is checked (`admit`), under the row's lock, so a
burst of parallel guesses cannot all slip through before the first failure is written; a
success takes its charge back (`succeeded`), and so does an attempt that checked nothing
because the directory was down (`refund`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from controlplane.console.models import SignInFailure, Source
from controlplane.core.db import utcnow

ACCOUNT_FREE_FAILURES = 5
ADDRESS_FREE_FAILURES = 10
FIRST_DELAY = timedelta(seconds=5)
MAX_DELAY = timedelta(minutes=15)
# Longer than MAX_DELAY: waiting out the longest delay must not also reset the count.
FORGET_AFTER = timedelta(hours=1)
ADDRESS = "address"
ACCOUNT = "account"


@dataclass(frozen=True)
class Admission:
    """`wait` > 0: refused for that many seconds. Otherwise the attempt may go ahead, and
    `delay_if_failed` is the wait its failure has already put in force."""

    wait: int
    delay_if_failed: int = 0


def delay_after(failures: int, free: int) -> timedelta:
    """The wait after the `failures`-th failure in a row: none before the `free`-th, then
    FIRST_DELAY, doubling with each further failure up to MAX_DELAY."""
    if failures < free:
        return timedelta(0)
    doublings = min(failures - free, 20)
    return min(FIRST_DELAY * (2**doublings), MAX_DELAY)


def account_key(username: str) -> str:
    """The typed name as the throttle counts it (same normalisation as a username). A directory
    account's row (`ldap:alice`) is counted under the name its person types (`alice`), so that
    unlocking or listing that row finds the failures of its sign-ins."""
    name = username.strip().lower()
    source, colon, typed = name.partition(":")
    return (typed if colon and source in (Source.LDAP, Source.OIDC) else name)[:128]


def _keys(address: str, username: str) -> list[tuple[str, str, str]]:
    address = address[:64]
    return [(ADDRESS, address, ""), (ACCOUNT, address, account_key(username))]


def _lock_rows(db: Session, keys: list[tuple[str, str, str]]) -> list[SignInFailure]:
    """Create the rows if missing and take their write lock (a no-op upsert locks the row in
    PostgreSQL and takes SQLite's write lock), then read them."""
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    for scope, address, account in keys:
        statement = insert(SignInFailure).values(
            scope=scope, address=address, account=account, failures=0
        )
        db.execute(
            statement.on_conflict_do_update(
                index_elements=["scope", "address", "account"],
                set_={"failures": SignInFailure.failures},
            )
        )
    rows = []
    for scope, address, account in keys:
        row = db.get(SignInFailure, (scope, address, account), populate_existing=True)
        assert row is not None
        rows.append(row)
    return rows


def admit(db: Session, address: str, username: str, now: datetime | None = None) -> Admission:
    """Charge one attempt to the address and to address + account, or refuse it (commits)."""
    now = now or utcnow()
    rows = _lock_rows(db, _keys(address, username))
    blocked = [row.blocked_until for row in rows if row.blocked_until and row.blocked_until > now]
    if blocked:
        db.commit()
        return Admission(wait=max(1, math.ceil((max(blocked) - now).total_seconds())))
    delay = timedelta(0)
    for row in rows:
        if row.last_failure_at is None or now - row.last_failure_at > FORGET_AFTER:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        free = ADDRESS_FREE_FAILURES if row.scope == ADDRESS else ACCOUNT_FREE_FAILURES
        row_delay = delay_after(row.failures, free)
        row.blocked_until = now + row_delay if row_delay else None
        delay = max(delay, row_delay)
    db.commit()
    return Admission(wait=0, delay_if_failed=math.ceil(delay.total_seconds()))


def refund(db: Session, address: str, username: str) -> None:
    """Take back an attempt's charge when nothing was checked (the directory was down).

    Any block on its rows was put there by this attempt's own charge, since it was admitted.
    The caller commits.
    """
    for scope, key_address, account in _keys(address, username):
        db.execute(
            update(SignInFailure)
            .where(SignInFailure.scope == scope, SignInFailure.address == key_address,
                   SignInFailure.account == account, SignInFailure.failures > 0)
            .values(failures=SignInFailure.failures - 1, blocked_until=None)
        )  # fmt: skip


def succeeded(db: Session, address: str, username: str) -> None:
    """A successful sign-in: refund its charge and clear the address + account count."""
    refund(db, address, username)
    _, key_address, account = _keys(address, username)[1]
    db.execute(
        delete(SignInFailure).where(
            SignInFailure.scope == ACCOUNT,
            SignInFailure.address == key_address,
            SignInFailure.account == account,
        )
    )


def forget_account(db: Session, username: str) -> int:
    """Lift every block on an account, from every address (`sparkplane admins unlock`)."""
    result = db.execute(
        delete(SignInFailure).where(
            SignInFailure.scope == ACCOUNT, SignInFailure.account == account_key(username)
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def blocked_accounts(db: Session, now: datetime | None = None) -> set[str]:
    """Account names currently blocked from at least one address."""
    now = now or utcnow()
    query = select(SignInFailure.account).where(
        SignInFailure.scope == ACCOUNT, SignInFailure.blocked_until > now
    )
    return set(db.scalars(query))


def purge(db: Session, now: datetime | None = None) -> None:
    """Drop counts that are forgotten anyway (housekeeping on successful sign-ins)."""
    now = now or utcnow()
    db.execute(
        delete(SignInFailure).where(
            (SignInFailure.last_failure_at < now - FORGET_AFTER)
            | (SignInFailure.last_failure_at.is_(None))
        )
    )
