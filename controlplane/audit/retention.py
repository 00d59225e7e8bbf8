"""Retention: prune old entries (keeping a signed checkpoint at the cut) and redact old data.

Both run in one transaction that also appends their own audit entry, under the chain lock, with
the permit row the database guards require (controlplane/audit/guards.py). Captured content
(`audit_content`, captured.py) goes with its entries: rows older than the cut or the tenant's
retention are deleted in the same transaction (`content_deleted` in the entry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from controlplane.audit import store
from controlplane.audit.chain import canonical_json, format_time
from controlplane.audit.checkpoint import CheckpointSigner
from controlplane.audit.models import AuditCheckpoint, AuditContent, AuditEntry, AuditPrunePermit

DEFAULT_RETENTION_DAYS = 730  # two years: Korea's PIPC asks for at least one to two


@dataclass
class RetentionResult:
    cut: int = 0
    deleted: int = 0
    redacted: dict[str, int] = field(default_factory=dict)


def parse_tenant_days(items: list[str]) -> dict[str, int]:
    """`NAME=DAYS` options into a policy mapping."""
    policies = {}
    for item in items:
        name, _, days = item.partition("=")
        if not name or not days.isdigit():
            raise ValueError(f"--tenant-days {item!r} must look like NAME=DAYS")
        policies[name] = int(days)
    return policies


def apply_retention(
    engine: Engine,
    signer: CheckpointSigner,
    *,
    default_days: int = DEFAULT_RETENTION_DAYS,
    tenant_days: Mapping[str, int] | None = None,
    now: datetime | None = None,
    reason: str = "retention policy",
) -> RetentionResult:
    """Delete what every policy lets go; redact the data of tenants with shorter retention."""
    tenant_days = dict(tenant_days or {})
    for name, days in {"default": default_days, **tenant_days}.items():
        if days < 1:
            raise ValueError(f"retention for {name} must be at least 1 day, not {days}")
    now = now or datetime.now(UTC)
    keep = max(default_days, *tenant_days.values()) if tenant_days else default_days
    result = RetentionResult()
    for tenant, days in sorted(tenant_days.items()):
        if days < keep:
            result.redacted[tenant] = redact(engine, signer, now - timedelta(days=days),
                                             tenants=[tenant], reason=reason)  # fmt: skip
    if default_days < keep:
        result.redacted["*"] = redact(engine, signer, now - timedelta(days=default_days),
                                      exclude=list(tenant_days), reason=reason)  # fmt: skip
    result.cut, result.deleted = prune_before(engine, signer, now - timedelta(days=keep), reason)
    return result


def prune_before(
    engine: Engine, signer: CheckpointSigner, before: datetime, reason: str
) -> tuple[int, int]:
    """Delete entries older than `before`; returns (cut seq, entries deleted)."""
    with engine.connect() as conn:
        store.lock_chain(conn)
        first = conn.execute(select(func.min(AuditEntry.seq))).scalar()
        cut = conn.execute(
            select(func.max(AuditEntry.seq)).where(AuditEntry.time < before)
        ).scalar()
        if first is None or cut is None:
            conn.rollback()
            return 0, 0
        moment = datetime.now(UTC)
        has_checkpoint = conn.execute(
            select(AuditCheckpoint.size).where(AuditCheckpoint.size == cut)
        ).first()
        if has_checkpoint is None:  # the remaining chain is anchored by a signed checkpoint
            cut_hash = conn.execute(select(AuditEntry.hash).where(AuditEntry.seq == cut)).scalar()
            store.add_checkpoint(conn, signer, cut, bytes(cut_hash or b""), moment)
        deleted = cut - first + 1
        fields = {"cut": cut, "before": format_time(before), "deleted": deleted, "reason": reason}
        content = conn.execute(delete(AuditContent).where(AuditContent.created < before)).rowcount
        if content:
            fields["content_deleted"] = content
        _append_and_checkpoint(conn, signer, "audit.pruned", fields, moment)
        with _Permit(conn, f"prune to {cut}"):
            conn.execute(delete(AuditEntry).where(AuditEntry.seq <= cut))
        conn.commit()
    return cut, deleted


def redact(
    engine: Engine,
    signer: CheckpointSigner,
    before: datetime,
    *,
    tenants: list[str] | None = None,
    exclude: list[str] | None = None,
    reason: str,
) -> int:
    """Remove the data (not the envelope) of tenant entries older than `before`."""
    condition = [
        AuditEntry.time < before,
        AuditEntry.data.is_not(None),
        AuditEntry.tenant.is_not(None),
        AuditEntry.kind.not_like("audit.%"),
    ]
    if tenants is not None:
        condition.append(AuditEntry.tenant.in_(tenants))
    if exclude:
        condition.append(AuditEntry.tenant.not_in(exclude))
    captured = [AuditContent.created < before]
    if tenants is not None:
        captured.append(AuditContent.tenant.in_(tenants))
    if exclude:
        captured.append(AuditContent.tenant.not_in(exclude))
    with engine.connect() as conn:
        store.lock_chain(conn)
        with _Permit(conn, "redact"):
            count = conn.execute(update(AuditEntry).where(*condition).values(data=None)).rowcount
        content = conn.execute(delete(AuditContent).where(*captured)).rowcount
        if count or content:
            fields = {"before": format_time(before), "tenants": tenants, "except": exclude,
                      "redacted": count, "reason": reason}  # fmt: skip
            if content:
                fields["content_deleted"] = content
            _append_and_checkpoint(conn, signer, "audit.redacted", fields, datetime.now(UTC))
        conn.commit()
    return int(count)


def _append_and_checkpoint(
    conn: Connection,
    signer: CheckpointSigner,
    kind: str,
    fields: Mapping[str, object],
    moment: datetime,
) -> None:
    head = store.read_head(conn)
    (entry,) = store.append_entries(conn, head, [(kind, None, canonical_json(fields))], moment)
    store.add_checkpoint(conn, signer, entry.seq, entry.hash, moment)


class _Permit:
    """The guard triggers allow DELETE/redaction only while this row exists (same transaction)."""

    def __init__(self, conn: Connection, reason: str) -> None:
        self.conn, self.reason = conn, reason

    def __enter__(self) -> None:
        self.conn.execute(insert(AuditPrunePermit).values(reason=self.reason[:200]))

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.conn.execute(delete(AuditPrunePermit))
