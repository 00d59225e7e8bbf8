"""What a directory sign-in does to the console's own records, for LDAP and OIDC alike.

The directory decides who may sign in and with which role; the console keeps one `AdminUser`
row per directory person (`ldap:NAME`, `oidc:NAME`) for sessions, the audit actor and the
Admin users page. A role that changed in the directory ends the person's open sessions; a
person the directory no longer knows, or no longer gives a role, loses them too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from controlplane.console.models import AdminUser, Role, Source
from controlplane.console.sessions import SessionPolicy, end_user_sessions, start_session
from controlplane.core.db import utcnow

MAX_USERNAME = 64
UNUSABLE_PASSWORD = "!"  # noqa: S105 (not an argon2 hash: verify_password never accepts anything)


class DirectoryRefusal(Exception):
    """The directory answered, and its answer is no; `reason` goes into the audit event."""

    def __init__(self, reason: str, message: str, status: int = 401, name: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.name = name  # the directory's name for the person, when it is known


class DirectoryUnavailable(Exception):
    """The directory could not be asked (down, wrong CA, timeout); nothing was changed."""


@dataclass(frozen=True)
class RoleMapping:
    """Directory groups that grant each role; admin wins over auditor."""

    admin: frozenset[str]
    auditor: frozenset[str]

    @classmethod
    def of(cls, admin: Iterable[str], auditor: Iterable[str],
           normalise: Callable[[str], str] = str.strip) -> RoleMapping:  # fmt: skip
        return cls(frozenset(map(normalise, admin)), frozenset(map(normalise, auditor)))

    def role_for(self, groups: Iterable[str]) -> tuple[Role | None, list[str]]:
        """The role `groups` grant and the mapped groups that granted it."""
        held = set(groups)
        for role, mapped in ((Role.ADMIN, self.admin), (Role.AUDITOR, self.auditor)):
            granting = sorted(held & mapped)
            if granting:
                return role, granting
        return None, []


@dataclass(frozen=True)
class DirectoryIdentity:
    """A person the directory vouched for, with the role their groups map to."""

    source: Source
    name: str  # the directory's user name, as typed or as the username claim says
    external_id: str  # LDAP DN, or OIDC "issuer sub"
    role: Role
    groups: list[str] = field(default_factory=list)  # the mapped groups that gave the role

    @property
    def username(self) -> str:
        return account_name(self.source, self.name)


def account_name(source: Source, name: str) -> str:
    """`ldap:alice`: never equal to a local name, whose alphabet has no ':'."""
    username = f"{source.value}:{name.strip().lower()}"
    if len(username) > MAX_USERNAME:
        raise DirectoryRefusal(
            "username_too_long",
            f"The directory user name is longer than {MAX_USERNAME} characters.",
        )
    return username


@dataclass(frozen=True)
class DirectorySignIn:
    token: str
    user_id: int
    username: str
    previous_role: str | None  # None: first sign-in; differs from the identity's: role changed


def sign_in(
    db: Session, identity: DirectoryIdentity, policy: SessionPolicy, address: str
) -> DirectorySignIn:
    """Create or update the person's row and start a session (commits).

    A row disabled in the console stays disabled: the console can refuse someone the
    directory allows, never the reverse.
    """
    user = db.query(AdminUser).filter_by(username=identity.username).one_or_none()
    previous_role = None
    if user is None:
        user = AdminUser(username=identity.username, role=identity.role.value,
                         password_hash=UNUSABLE_PASSWORD, must_change_password=False,
                         source=identity.source.value)  # fmt: skip
        db.add(user)
    elif user.is_local:
        raise DirectoryRefusal("name_taken", "This name belongs to a local account.")
    else:
        previous_role = user.role
        if user.disabled:
            raise DirectoryRefusal("disabled", "This account is disabled in the console.", 403)
        if _another_person(user, identity):
            raise DirectoryRefusal(
                "identity_changed",
                "This name already belongs to another person of the identity provider: "
                "the provider must give each person a username of their own.",
                403,
            )
        if previous_role != identity.role.value:
            # The directory changed the role: every open session of the old role ends now.
            end_user_sessions(db, user.id)
            user.role = identity.role.value
    user.external_id = identity.external_id[:512]
    user.last_signin_at = utcnow()
    user.last_signin_address = address[:64]
    db.flush()
    token = start_session(db, user, policy, address)
    db.commit()
    return DirectorySignIn(token, user.id, user.username, previous_role)


def _another_person(user: AdminUser, identity: DirectoryIdentity) -> bool:
    """An OpenID row whose subject differs from the one signing in: two people under one
    username claim, who must never share an account, its sessions and its audit actor. (An LDAP
    DN changes when a person moves, so for LDAP the name is the identity.)"""
    return (
        identity.source is Source.OIDC
        and bool(user.external_id)
        and user.external_id != identity.external_id[:512]
    )


def end_sessions_of(db: Session, source: Source, name: str) -> bool:
    """The directory no longer lets `name` in: end their open sessions (commits).

    Called only on the directory's own word (user not found by the service account, no
    mapped group after a good password), never on a failed password, which anyone can cause.
    """
    try:
        username = account_name(source, name)
    except DirectoryRefusal:
        return False
    user = db.query(AdminUser).filter_by(username=username).one_or_none()
    if user is None or user.is_local:
        return False
    end_user_sessions(db, user.id)
    db.commit()
    return True
