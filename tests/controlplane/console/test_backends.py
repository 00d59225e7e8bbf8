"""The console's own SQL on SQLite and on the real PostgreSQL server (users, sessions, audit)."""

from __future__ import annotations

import asyncio
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from controlplane.audit import AuditWriter
from controlplane.console import users
from controlplane.console.auth import SignInOutcome, authenticate, create_admin, find_user
from controlplane.console.directory.accounts import DirectoryIdentity, DirectoryRefusal, sign_in
from controlplane.console.models import Role, Source
from controlplane.console.queries import AuditFilter, audit_page, usage_rows
from controlplane.console.sessions import SessionPolicy, load_session, start_session
from controlplane.core.db import session_factory
from controlplane.tenancy.actions import AdminContext


def test_users_and_sessions(db_engine: Engine) -> None:
    with session_factory(db_engine)() as db:
        password = create_admin(db, "pgadmin", "admin")
        db.commit()
        assert authenticate(db, "pgadmin", password).outcome is SignInOutcome.OK
        user = find_user(db, "pgadmin")
        assert user is not None
        token = start_session(db, user, SessionPolicy())
        db.commit()
        active = load_session(db, token, SessionPolicy())
        assert active is not None and active.role == "admin"


async def test_audit_filters_and_paging(db_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(db_engine, tmp_path / "audit-signing.key")
    await writer.start()
    try:
        await writer.record("admin.tenant_create", tenant="acme", actor="alice_1", target="acme")
        await writer.record("admin.tenant_create", tenant="beta", actor="alicex1", target="beta")
        await writer.record("console.signin", actor="alice_1")
    finally:
        await writer.close()
    with session_factory(db_engine)() as db:
        by_actor = audit_page(db, AuditFilter(actor="alice_1"), None, None, 50)
        assert [row.kind for row in by_actor] == ["console.signin", "admin.tenant_create"]
        admin_only = audit_page(db, AuditFilter(actor="alice_1", action="admin"), None, None, 50)
        assert [row.tenant for row in admin_only] == ["acme"]
        first_page = audit_page(db, AuditFilter(), None, None, 2)
        older = audit_page(db, AuditFilter(), first_page[-1].seq, None, 2)
        assert [r.seq for r in first_page + older] == [3, 2, 1]
        newer = audit_page(db, AuditFilter(), None, older[0].seq, 2)
        assert [r.seq for r in newer] == [3, 2]
        assert usage_rows(db, date(2026, 1, 1), date(2026, 12, 31)) == []


def test_two_openid_subjects_never_share_an_account(db_engine: Engine) -> None:
    """The username claim can repeat across subjects (a reused name, a second issuer account):
    the second subject is refused, never signed in as the first. An LDAP DN may change (the
    person moved), so there the name is the identity."""
    first = DirectoryIdentity(Source.OIDC, "alice", "https://idp subject-1", Role.ADMIN)
    other = DirectoryIdentity(Source.OIDC, "alice", "https://idp subject-2", Role.ADMIN)
    moved = DirectoryIdentity(Source.LDAP, "bob", "uid=bob,ou=a,dc=x", Role.AUDITOR)
    with session_factory(db_engine)() as db:
        assert sign_in(db, first, SessionPolicy(), "10.0.0.1").username == "oidc:alice"
        assert sign_in(db, first, SessionPolicy(), "10.0.0.1").username == "oidc:alice"
        with pytest.raises(DirectoryRefusal) as refused:
            sign_in(db, other, SessionPolicy(), "10.0.0.2")
        assert (refused.value.reason, refused.value.status) == ("identity_changed", 403)
        sign_in(db, moved, SessionPolicy(), "10.0.0.3")
        moved_again = DirectoryIdentity(Source.LDAP, "bob", "uid=bob,ou=b,dc=x", Role.AUDITOR)
        assert sign_in(db, moved_again, SessionPolicy(), "10.0.0.3").username == "ldap:bob"


async def test_two_admins_cannot_disable_each_other_at_once(
    db_engine: Engine, tmp_path: Path
) -> None:
    """The last-admin guard under a race: both disables count two admins unless the count
    locks them, so each request is made to dwell after its count."""
    with session_factory(db_engine)() as db:
        for name in ("first", "second"):
            create_admin(db, name, "admin", "a long enough password 1")
        db.commit()

    def dwell(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM admin_users" in statement and "disabled" in statement:
            time.sleep(0.5)  # after the count, before the update: where the race would be

    writer = AuditWriter(db_engine, tmp_path / "audit-signing.key")
    await writer.start()
    event.listen(db_engine, "after_cursor_execute", dwell)
    try:
        ctx = AdminContext(session_factory(db_engine), b"pepper", writer, "tester")
        results = await asyncio.gather(users.set_disabled(ctx, "first", True),
                                       users.set_disabled(ctx, "second", True),
                                       return_exceptions=True)  # fmt: skip
    finally:
        event.remove(db_engine, "after_cursor_execute", dwell)
        await writer.close()
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 1, results
    assert "last enabled local admin" in str(refused[0])
    with session_factory(db_engine)() as db:
        assert users._local_admins(db) == 1
