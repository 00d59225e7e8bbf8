"""Audit tables on the shared `Base`; `install_guards` adds the append-only triggers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.core.db import Base, UtcDateTime

# SQLite only makes INTEGER PRIMARY KEY the rowid (ordered, no extra index); elsewhere BIGINT.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class AuditEntry(Base):
    """One chain link. `envelope` and `data` are the exact canonical bytes that were hashed."""

    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str | None] = mapped_column(String(200), index=True)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    # NULL once retention has redacted it; the envelope keeps its digest so the chain verifies.
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditCheckpoint(Base):
    """A signed note (C2SP checkpoint) over the chain head at `size`."""

    __tablename__ = "audit_checkpoints"

    size: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(8))
    created: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditPrunePermit(Base):
    """Exists only inside the retention job's transaction; the guards let it delete/redact."""

    __tablename__ = "audit_prune_permits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reason: Mapped[str] = mapped_column(String(200))


class AuditHealthProbe(Base):
    """A one-row table the writer rewrites to find out whether the store is writable again."""

    __tablename__ = "audit_health_probe"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditContentKey(Base):
    """Per-tenant AES-256 data key wrapped by the appliance key; deleting it crypto-shreds."""

    __tablename__ = "audit_content_keys"

    tenant: Mapped[str] = mapped_column(String(200), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(UtcDateTime())


class InstallerEventImport(Base):
    """Each installer event imported into the chain, by its id (the SHA-256 of its line).

    Kept outside the chain because retention prunes old entries: an event whose entry was
    pruned must still count as imported, or the next import would record it again.
    """

    __tablename__ = "installer_event_imports"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(SeqType)


class AuditFeedCursor(Base):
    """How far the SIEM feed has delivered the chain; shared by replicas (one sends at a time)."""

    __tablename__ = "audit_feed_cursors"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    entry_seq: Mapped[int] = mapped_column(SeqType)  # every entry up to here is delivered
    checkpoint_size: Mapped[int] = mapped_column(SeqType)  # and every checkpoint up to here
    updated: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditRetentionRun(Base):
    """One run of the scheduled retention job: when, and what it pruned or redacted."""

    __tablename__ = "audit_retention_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started: Mapped[datetime] = mapped_column(UtcDateTime())
    finished: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    cut: Mapped[int] = mapped_column(SeqType, default=0)  # entries up to here are deleted
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    redacted: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditContent(Base):
    """The captured content of one call, sealed under its tenant's data key (content.py).

    Its `api.completion` entry carries the SHA-256 of `sealed` (`content_sha256`), so the chain
    binds the ciphertext; destroying the tenant's key makes every row unreadable for good.
    """

    __tablename__ = "audit_content"

    request_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200), index=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    sealed: Mapped[str] = mapped_column(Text)
