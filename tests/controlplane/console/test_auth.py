"""Local admin users: hashing, first admin, password policy, sign-in outcomes."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from controlplane.console.auth import (
    ConsoleAuthError,
    SignInOutcome,
    authenticate,
    change_password,
    create_admin,
    find_user,
    reset_password,
    verify_password,
)
from controlplane.console.models import AdminUser, Source

GOOD_PASSWORD = "correct horse battery staple"


def test_create_admin_generates_one_time_password_stored_as_argon2id(db: Session) -> None:
    password = create_admin(db, "Alice", "admin")
    db.commit()
    user = find_user(db, "alice")
    assert user is not None and user.role == "admin"
    assert user.must_change_password
    assert len(password) >= 20
    assert user.password_hash.startswith("$argon2id$")
    assert password not in user.password_hash
    assert verify_password(user.password_hash, password)
    assert not verify_password(user.password_hash, password + "x")


def test_create_admin_with_password_does_not_force_change(db: Session) -> None:
    assert create_admin(db, "bob", "auditor", GOOD_PASSWORD) == GOOD_PASSWORD
    user = find_user(db, "bob")
    assert user is not None and not user.must_change_password and user.role == "auditor"


@pytest.mark.parametrize(
    ("username", "role", "password", "message"),
    [
        ("x", "admin", None, "username must be"),
        ("bad name", "admin", None, "username must be"),
        ("carol", "root", None, "role must be one of admin, auditor"),
        ("carol", "admin", "short", "at least 12 characters"),
        ("carol", "admin", "carol-is-my-password", "must not contain the username"),
    ],
)
def test_create_admin_rejects_bad_input(
    db: Session, username: str, role: str, password: str | None, message: str
) -> None:
    with pytest.raises(ConsoleAuthError, match=message):
        create_admin(db, username, role, password)


def test_duplicate_username_is_refused(db: Session) -> None:
    create_admin(db, "dave", "admin")
    with pytest.raises(ConsoleAuthError, match="already exists"):
        create_admin(db, "DAVE", "auditor")


def test_failures_never_lock_the_account(db: Session) -> None:
    """Throttling is per address (console/throttle.py): failures alone lock nobody out."""
    create_admin(db, "erin", "admin", GOOD_PASSWORD)
    for _ in range(20):
        assert authenticate(db, "erin", "wrong").outcome is SignInOutcome.BAD_CREDENTIALS
    assert authenticate(db, "erin", GOOD_PASSWORD).outcome is SignInOutcome.OK


def test_directory_accounts_have_no_local_password(db: Session) -> None:
    db.add(AdminUser(username="ldap:frank", role="admin", password_hash="!",
                     source=Source.LDAP.value, must_change_password=False))  # fmt: skip
    db.flush()
    assert authenticate(db, "ldap:frank", "!").outcome is SignInOutcome.BAD_CREDENTIALS
    user = find_user(db, "ldap:frank")
    assert user is not None
    with pytest.raises(ConsoleAuthError, match="through the directory"):
        reset_password(db, user)


def test_unknown_user_and_disabled_user(db: Session) -> None:
    assert authenticate(db, "nobody", "whatever").outcome is SignInOutcome.BAD_CREDENTIALS
    create_admin(db, "gina", "auditor", GOOD_PASSWORD)
    user = find_user(db, "gina")
    assert user is not None
    user.disabled = True
    # A wrong password does not reveal that the account is disabled.
    assert authenticate(db, "gina", "wrong").outcome is SignInOutcome.BAD_CREDENTIALS
    assert authenticate(db, "gina", GOOD_PASSWORD).outcome is SignInOutcome.DISABLED


def test_change_and_reset_password(db: Session) -> None:
    first = create_admin(db, "hank", "admin")
    user = find_user(db, "hank")
    assert user is not None
    with pytest.raises(ConsoleAuthError, match="current password is wrong"):
        change_password(db, user, "not-it", GOOD_PASSWORD)
    with pytest.raises(ConsoleAuthError, match="at least 12"):
        change_password(db, user, first, "short")
    change_password(db, user, first, GOOD_PASSWORD)
    assert not user.must_change_password
    assert authenticate(db, "hank", GOOD_PASSWORD).outcome is SignInOutcome.OK
    again = reset_password(db, user)
    assert user.must_change_password
    assert authenticate(db, "hank", GOOD_PASSWORD).outcome is SignInOutcome.BAD_CREDENTIALS
    assert authenticate(db, "hank", again).outcome is SignInOutcome.OK
