"""Admin API tokens with a role, rotated from the shell (issue 17, finding 10).

A token is `spa-` and 43 random URL-safe characters; only its HMAC with the appliance's pepper
is stored (`admin_tokens`), with its name, role and visible prefix. Each request of the admin
API looks its token up (`lookup`), so a rotation takes effect on the next request on every
replica. `rotate` revokes the name's current token and, when asked to, retires the token of
SPARKPLANE_ADMIN_TOKEN too: it is then stored as revoked, so it stops working although the
setting still names it.
"""

from __future__ import annotations

import secrets
from typing import Literal, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controlplane.api.models import AdminToken
from controlplane.core.db import utcnow
from controlplane.core.security import hash_api_key

TOKEN_SCHEME = "spa-"  # noqa: S105 (a prefix, not a secret)
PREFIX_LENGTH = len(TOKEN_SCHEME) + 6
DEFAULT_NAME = "admin-token"  # the actor of SPARKPLANE_ADMIN_TOKEN's calls, too
TokenRole = Literal["admin", "auditor"]


def lookup(db: Session, pepper: bytes, token: str) -> AdminToken | None:
    """The stored token `token` is (revoked or not), or None when none is."""
    digest = hash_api_key(pepper, token)
    return db.scalars(select(AdminToken).where(AdminToken.token_hash == digest)).first()


class Rotation(NamedTuple):
    token: str  # shown once
    row: AdminToken
    retired_setting: bool  # this rotation retired the configured token (not an earlier one)


def rotate(
    db: Session, pepper: bytes, name: str, role: TokenRole, retire: str | None = None
) -> Rotation:
    """Revoke `name`'s current token (and `retire`, the configured token, if given) and
    store a new one. The caller commits."""
    now = utcnow()
    db.execute(
        update(AdminToken)
        .where(AdminToken.name == name, AdminToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    retired = False
    if retire and lookup(db, pepper, retire) is None:
        db.add(AdminToken(name=name, role="admin", token_hash=hash_api_key(pepper, retire),
                          prefix="(setting)", created_at=now, revoked_at=now))  # fmt: skip
        retired = True
    token = TOKEN_SCHEME + secrets.token_urlsafe(32)
    row = AdminToken(name=name, role=role, token_hash=hash_api_key(pepper, token),
                     prefix=token[:PREFIX_LENGTH], created_at=now)  # fmt: skip
    db.add(row)
    db.flush()
    return Rotation(token, row, retired)


def active_tokens(db: Session) -> list[AdminToken]:
    query = select(AdminToken).where(AdminToken.revoked_at.is_(None)).order_by(AdminToken.name)
    return list(db.scalars(query))
