"""Per-tenant content encryption and crypto-shredding, on a real SQLite file."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from controlplane.audit.content import ContentError, ContentShredded, ContentVault
from controlplane.audit.models import AuditContentKey, AuditEntry
from controlplane.audit.verify import verify_live


@pytest.fixture
def vault(sqlite_engine, tmp_path):
    return ContentVault(sqlite_engine, tmp_path / "audit-content.key")


def test_master_key_file_is_private(vault, tmp_path):
    path = tmp_path / "audit-content.key"
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_bytes()) == 32


def test_content_round_trips_and_is_bound_to_its_tenant(vault):
    token = vault.seal("acme", "the secret prompt")
    assert "secret" not in token and token.startswith("v1.")
    assert vault.open("acme", token) == b"the secret prompt"
    vault.seal("beta", "other")  # beta gets its own key
    with pytest.raises(ContentError, match="authentication"):
        vault.open("beta", token)
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(ContentError):
        vault.open("acme", tampered)


async def test_shredding_makes_content_unreadable_and_the_chain_still_verifies(
    vault, writer, sqlite_engine, tmp_path
):
    prompt = vault.seal("acme", "patient record 4711")
    await writer.record("api.completion", tenant="acme", prompt_sealed=prompt)
    other = vault.seal("beta", "kept")
    with sqlite_engine.connect() as conn:
        wrapped = conn.execute(
            select(AuditContentKey.wrapped_key).where(AuditContentKey.tenant == "acme")
        ).scalar()
    seq = await vault.shred("acme", writer, actor="admin")
    with pytest.raises(ContentShredded, match="destroyed"):
        vault.open("acme", prompt)
    assert vault.open("beta", other) == b"kept"
    with sqlite_engine.connect() as conn:
        kind = conn.execute(select(AuditEntry.kind).where(AuditEntry.seq == seq)).scalar()
    assert kind == "admin.tenant_content_shredded"
    # secure_delete + WAL truncation: the wrapped key is gone from every file of the database.
    for path in tmp_path.glob("audit.db*"):
        assert wrapped not in path.read_bytes(), path
    await writer.checkpoint_now()
    assert verify_live(sqlite_engine, [tmp_path / "audit-signing.pub"]).valid
