"""Opt-in content capture: prompts/completions encrypted per tenant; erasure = crypto-shredding.

Each tenant gets a random AES-256 data key, stored only wrapped (AES-256-GCM) by the appliance's
content master key (a 32-byte file, mode 0600, next to the audit signing key). Sealed content is
`v1.` + base64(nonce || ciphertext+tag) with the tenant name as associated data; callers put that
token in the audit fields, so the chain covers only ciphertext. `shred` records the erasure in
the chain first (fail closed), then destroys the wrapped key: the tokens stay in the chain (which
still verifies) but can never be opened again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from controlplane.audit.models import AuditContentKey
from controlplane.audit.writer import AuditWriter

SEALED_PREFIX = "v1."
MASTER_KEY_FILE = "audit-content.key"  # in the data directory, next to the audit signing key
NONCE_BYTES = 12


class ContentError(ValueError):
    """A sealed token that is malformed or fails authentication."""


class ContentShredded(ContentError):
    """The tenant's data key was destroyed; its content is gone for good."""


def load_or_create_master_key(path: Path) -> bytes:
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(AESGCM.generate_key(bit_length=256))
    key = path.read_bytes()
    if len(key) != 32:
        raise ContentError(f"content master key {path} must be 32 bytes, found {len(key)}")
    return key


class ContentVault:
    def __init__(self, engine: Engine, master_key_path: Path) -> None:
        self.engine = engine
        self._master = AESGCM(load_or_create_master_key(master_key_path))

    def seal(self, tenant: str, plaintext: str | bytes) -> str:
        """Encrypt under the tenant's data key (created on first use)."""
        return self.sealer(tenant)(plaintext)

    def sealer(self, tenant: str) -> Callable[[str | bytes], str]:
        """`seal` for several texts of one tenant, with one look-up of its data key."""
        aead, aad = AESGCM(self._data_key(tenant, create=True)), _aad(tenant)

        def seal(plaintext: str | bytes) -> str:
            raw = plaintext.encode() if isinstance(plaintext, str) else plaintext
            nonce = os.urandom(NONCE_BYTES)
            return SEALED_PREFIX + base64.b64encode(nonce + aead.encrypt(nonce, raw, aad)).decode()

        return seal

    def open(self, tenant: str, token: str) -> bytes:
        """Decrypt a token; ContentShredded once the tenant's key is destroyed."""
        if not token.startswith(SEALED_PREFIX):
            raise ContentError("not a sealed content token")
        try:
            blob = base64.b64decode(token[len(SEALED_PREFIX) :], validate=True)
        except binascii.Error as exc:
            raise ContentError("sealed content is not base64") from exc
        try:
            aead = AESGCM(self._data_key(tenant, create=False))
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(tenant))
        except InvalidTag as exc:
            raise ContentError(
                "sealed content failed authentication (wrong tenant or altered)"
            ) from exc

    async def shred(self, tenant: str, writer: AuditWriter, *, actor: str) -> int:
        """Record the erasure (fail closed), then destroy the tenant's data key."""
        seq = await writer.record("admin.tenant_content_shredded", tenant=tenant, actor=actor)
        await asyncio.to_thread(self._destroy_key, tenant)
        return seq

    def _destroy_key(self, tenant: str) -> None:
        with self.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:  # overwrite the freed page instead of leaving the key bytes in it
                conn.exec_driver_sql("PRAGMA secure_delete=ON")
            conn.execute(delete(AuditContentKey).where(AuditContentKey.tenant == tenant))
            conn.commit()
            if sqlite:  # copy the overwritten page back into the DB and empty the WAL file
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.exec_driver_sql("PRAGMA secure_delete=OFF")
                conn.commit()

    def _data_key(self, tenant: str, *, create: bool) -> bytes:
        with self.engine.connect() as conn:
            wrapped = conn.execute(
                select(AuditContentKey.wrapped_key).where(AuditContentKey.tenant == tenant)
            ).scalar()
            if wrapped is None and create:
                key = AESGCM.generate_key(bit_length=256)
                nonce = os.urandom(NONCE_BYTES)
                wrapped = nonce + self._master.encrypt(nonce, key, _wrap_aad(tenant))
                row = {"tenant": tenant, "wrapped_key": wrapped, "created": datetime.now(UTC)}
                try:
                    conn.execute(insert(AuditContentKey).values(**row))
                    conn.commit()
                except IntegrityError:  # another replica created it first: use theirs
                    conn.rollback()
                    return self._data_key(tenant, create=False)
        if wrapped is None:
            raise ContentShredded(f"content key of tenant {tenant!r} was destroyed (or never made)")
        wrapped = bytes(wrapped)
        return self._master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(tenant))


def _aad(tenant: str) -> bytes:
    return b"sparkplane-content\x00" + tenant.encode()


def _wrap_aad(tenant: str) -> bytes:
    return b"sparkplane-data-key\x00" + tenant.encode()
