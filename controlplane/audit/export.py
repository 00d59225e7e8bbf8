"""`audit export`: a self-contained JSONL file an auditor verifies offline.

Layout (docs/audit.md): a signed header line, then entry lines in seq order with each
checkpoint line right after the entry it covers, then the signer's public key. Entries outside
the requested time range or tenant are still present (the chain needs them) but their data is
withheld (`"d":null`); their envelopes, hashes and digests remain.
"""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, func, select

from controlplane.audit.chain import GENESIS_HASH, canonical_json, export_line, format_time
from controlplane.audit.checkpoint import CheckpointSigner
from controlplane.audit.models import AuditCheckpoint, AuditEntry
from controlplane.audit.store import as_utc
from controlplane.audit.writer import AuditWriter
from installer.signing import public_pem

FORMAT = "sparkplane-audit-export/v1"
HEADER_SIGNATURE_CONTEXT = b"sparkplane audit export header v1\n"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    export_seq: int
    first_seq: int
    last_seq: int
    disclosed: int
    withheld: int


def sign_header(signer: CheckpointSigner, header: dict[str, object]) -> bytes:
    sig = signer.private_key.sign(HEADER_SIGNATURE_CONTEXT + canonical_json(header))
    return canonical_json({"header": header, "sig": base64.b64encode(sig).decode()}) + b"\n"


async def export_audit(
    engine: Engine,
    writer: AuditWriter,
    out: Path,
    *,
    reason: str,
    start: datetime | None = None,
    end: datetime | None = None,
    tenant: str | None = None,
    actor: str | None = None,
) -> ExportResult:
    """Record the export (with its reason) in the chain, checkpoint, then write the file."""
    if not reason or not reason.strip():
        raise ValueError("an export needs a reason (it is recorded in the audit trail)")
    if start and end and start > end:
        raise ValueError("--from is after --to")
    export_seq = await writer.record(
        "audit.export",
        reason=reason.strip(),
        actor=actor,
        tenant_filter=tenant,
        time_from=format_time(start) if start else None,
        time_to=format_time(end) if end else None,
        file=Path(out).name,
    )
    await writer.checkpoint_now()
    return await asyncio.to_thread(
        _write_export, engine, writer.signer, Path(out), export_seq, reason, start, end, tenant
    )


def _write_export(
    engine: Engine,
    signer: CheckpointSigner,
    out: Path,
    export_seq: int,
    reason: str,
    start: datetime | None,
    end: datetime | None,
    tenant: str | None,
) -> ExportResult:
    with engine.connect() as conn:
        first_query = select(func.min(AuditEntry.seq))
        if start is not None:
            first_query = first_query.where(AuditEntry.time >= start)
        first = conn.execute(first_query).scalar() or export_seq
        wanted_last = export_seq
        if end is not None:
            wanted_last = conn.execute(
                select(func.max(AuditEntry.seq)).where(AuditEntry.time <= end)
            ).scalar() or (first - 1)
        # Extend to the first checkpoint at or after the range, so that its end is signed.
        checkpoints = {
            int(size): note
            for size, note in conn.execute(
                select(AuditCheckpoint.size, AuditCheckpoint.note).where(
                    AuditCheckpoint.size >= first - 1
                )
            )
        }
        last = min((s for s in checkpoints if s >= max(wanted_last, first)), default=export_seq)
        prev = _hash_before(conn, first)
        header = {
            "format": FORMAT,
            "origin": signer.origin,
            "key_id": signer.key_id.hex(),
            "first_seq": first,
            "last_seq": last,
            "prev_hash": prev.hex(),
            "created": format_time(datetime.now(UTC)),
            "reason": reason.strip(),
            "export_seq": export_seq,
            "filter": {
                "from": format_time(start) if start else None,
                "to": format_time(end) if end else None,
                "tenant": tenant,
            },
        }
        tmp = out.with_name(out.name + ".partial")
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
        )  # exports hold personal data
        disclosed = withheld = 0
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            handle.write(sign_header(signer, header))
            if first - 1 in checkpoints:
                handle.write(canonical_json({"checkpoint": checkpoints[first - 1]}) + b"\n")
            rows = conn.execution_options(yield_per=10_000).execute(
                select(AuditEntry.seq, AuditEntry.time, AuditEntry.kind, AuditEntry.tenant,
                       AuditEntry.envelope, AuditEntry.data, AuditEntry.hash)
                .where(AuditEntry.seq >= first, AuditEntry.seq <= last)
                .order_by(AuditEntry.seq)
            )  # fmt: skip
            for seq, moment, kind, entry_tenant, envelope, data, entry_hash in rows:
                show = _disclose(as_utc(moment), kind, entry_tenant, start, end, tenant)
                data = data if show else None
                disclosed, withheld = disclosed + (data is not None), withheld + (data is None)
                handle.write(export_line(bytes(entry_hash), bytes(envelope), data and bytes(data)))
                if seq in checkpoints:
                    handle.write(canonical_json({"checkpoint": checkpoints[seq]}) + b"\n")
            key = {"name": signer.origin, "key_id": signer.key_id.hex(),
                   "pem": public_pem(signer.public_key).decode()}  # fmt: skip
            handle.write(canonical_json({"public_key": key}) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    return ExportResult(out, export_seq, first, last, disclosed, withheld)


def _disclose(
    moment: datetime,
    kind: str,
    entry_tenant: str | None,
    start: datetime | None,
    end: datetime | None,
    tenant: str | None,
) -> bool:
    if kind.startswith("audit."):
        return True  # exports, prunes and key rotations: the verifier needs them
    if (start and moment < start) or (end and moment > end):
        return False
    return tenant is None or entry_tenant == tenant


def _hash_before(conn: Connection, first: int) -> bytes:
    """The chain hash just before `first`: an entry, or the checkpoint kept at a prune cut."""
    if first <= 1:
        return GENESIS_HASH
    execute = conn.execute
    row = execute(select(AuditEntry.hash).where(AuditEntry.seq == first - 1)).first()
    if row is None:
        row = execute(
            select(AuditCheckpoint.root_hash).where(AuditCheckpoint.size == first - 1)
        ).first()
    if row is None:
        raise RuntimeError(f"no entry or checkpoint before seq {first}: the chain has a hole")
    return bytes(row[0])
