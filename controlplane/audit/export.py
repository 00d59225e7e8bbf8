"""`audit export`: a self-contained JSONL file an auditor verifies offline.

Layout (docs/audit.md): a signed header line, then entry lines in seq order with each
checkpoint line right after the entry it covers, then the signer's public key. Entries outside
the requested time range or tenant are still present (the chain needs them) but their data is
withheld (`"d":null`); their envelopes, hashes and digests remain.

With `content` (`audit export --content`), each disclosed `api.completion` entry that names a
`content_sha256` is followed by a content line: the sealed token (whose SHA-256 the verifier
checks against the entry) and the record decrypted from it, or why it cannot be (`erased`).
"""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson
from sqlalchemy import Connection, Engine, func, select

from controlplane.audit.captured import ContentStore
from controlplane.audit.chain import GENESIS_HASH, canonical_json, export_line, format_time
from controlplane.audit.checkpoint import CheckpointSigner
from controlplane.audit.models import AuditCheckpoint, AuditEntry
from controlplane.audit.store import as_utc
from controlplane.audit.writer import AuditWriter
from controlplane.core.signing import public_pem

FORMAT = "sparkplane-audit-export/v1"
HEADER_SIGNATURE_CONTEXT = b"sparkplane audit export header v1\n"


@dataclass(frozen=True)
class ExportFilter:
    """Which entries' data the export discloses (all entries are present either way)."""

    start: datetime | None = None
    end: datetime | None = None
    tenant: str | None = None

    def discloses(self, moment: datetime, kind: str, tenant: str | None) -> bool:
        if kind.startswith("audit."):
            return True  # exports, prunes and key rotations: the verifier needs them
        if (self.start and moment < self.start) or (self.end and moment > self.end):
            return False
        return self.tenant is None or tenant == self.tenant

    def as_json(self) -> dict[str, str | None]:
        return {
            "from": format_time(self.start) if self.start else None,
            "to": format_time(self.end) if self.end else None,
            "tenant": self.tenant,
        }


@dataclass(frozen=True)
class ExportResult:
    path: Path
    export_seq: int
    first_seq: int
    last_seq: int
    disclosed: int
    withheld: int
    content: int = 0  # content lines written (decrypted or not)


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
    content: ContentStore | None = None,
) -> ExportResult:
    """Record the export (with its reason) in the chain, checkpoint, then write the file."""
    if not reason or not reason.strip():
        raise ValueError("an export needs a reason (it is recorded in the audit trail)")
    if start and end and start > end:
        raise ValueError("--from is after --to")
    wanted = ExportFilter(start, end, tenant)
    filters = wanted.as_json()
    export_seq = await writer.record(
        "audit.export",
        reason=reason.strip(),
        actor=actor,
        tenant_filter=tenant,
        time_from=filters["from"],
        time_to=filters["to"],
        file=Path(out).name,
        content=content is not None,
    )
    await writer.checkpoint_now()
    header = {"reason": reason.strip(), "export_seq": export_seq, "filter": filters,
              "content": content is not None}  # fmt: skip
    return await asyncio.to_thread(
        _write, engine, writer.signer, Path(out), header, wanted, export_seq, content
    )


def _write(
    engine: Engine, signer: CheckpointSigner, out: Path, header: dict[str, object],
    wanted: ExportFilter, export_seq: int, content: ContentStore | None = None,
) -> ExportResult:  # fmt: skip
    with engine.connect() as conn:
        first, last, checkpoints = _plan(conn, wanted, export_seq)
        header |= {
            "format": FORMAT,
            "origin": signer.origin,
            "key_id": signer.key_id.hex(),
            "first_seq": first,
            "last_seq": last,
            "prev_hash": _hash_before(conn, first).hex(),
            "created": format_time(datetime.now(UTC)),
        }
        partial = out.with_name(out.name + ".partial")
        # 0600 from the first byte: exports hold personal data.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            handle.write(sign_header(signer, header))
            disclosed, withheld, contents = _write_entries(
                conn, handle, first, last, checkpoints, wanted, content
            )
            key = {"name": signer.origin, "key_id": signer.key_id.hex(),
                   "pem": public_pem(signer.public_key).decode()}  # fmt: skip
            handle.write(canonical_json({"public_key": key}) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(partial, out)
    return ExportResult(out, export_seq, first, last, disclosed, withheld, contents)


def _plan(
    conn: Connection, wanted: ExportFilter, export_seq: int
) -> tuple[int, int, dict[int, str]]:
    """First and last seq to export, and the checkpoint notes from just before `first` on.

    The range ends at the first checkpoint at or after the wanted end, so its end is signed."""
    first_query = select(func.min(AuditEntry.seq))
    if wanted.start is not None:
        first_query = first_query.where(AuditEntry.time >= wanted.start)
    first = conn.execute(first_query).scalar() or export_seq
    wanted_last = export_seq
    if wanted.end is not None:
        before_end = select(func.max(AuditEntry.seq)).where(AuditEntry.time <= wanted.end)
        wanted_last = conn.execute(before_end).scalar() or first
    rows = conn.execute(
        select(AuditCheckpoint.size, AuditCheckpoint.note).where(AuditCheckpoint.size >= first - 1)
    )
    checkpoints = {int(size): note for size, note in rows}
    last = min((s for s in checkpoints if s >= max(wanted_last, first)), default=export_seq)
    return first, last, checkpoints


def _write_entries(
    conn: Connection, handle: BinaryIO, first: int, last: int, checkpoints: dict[int, str],
    wanted: ExportFilter, content: ContentStore | None,
) -> tuple[int, int, int]:  # fmt: skip
    if first - 1 in checkpoints:  # the anchor kept at a retention cut
        handle.write(canonical_json({"checkpoint": checkpoints[first - 1]}) + b"\n")
    rows = conn.execution_options(yield_per=10_000).execute(
        select(AuditEntry.seq, AuditEntry.time, AuditEntry.kind, AuditEntry.tenant,
               AuditEntry.envelope, AuditEntry.data, AuditEntry.hash)
        .where(AuditEntry.seq >= first, AuditEntry.seq <= last)
        .order_by(AuditEntry.seq)
    )  # fmt: skip
    disclosed = withheld = contents = 0
    for seq, moment, kind, tenant, envelope, data, entry_hash in rows:
        shown = data is not None and wanted.discloses(as_utc(moment), kind, tenant)
        disclosed, withheld = disclosed + shown, withheld + (not shown)
        handle.write(
            export_line(
                bytes(entry_hash),
                bytes(envelope),
                bytes(data) if shown and data is not None else None,
            )
        )
        if content is not None and shown and data is not None and CONTENT_MARK in data:
            contents += _write_content(handle, content, seq, bytes(data))
        if seq in checkpoints:
            handle.write(canonical_json({"checkpoint": checkpoints[seq]}) + b"\n")
    return disclosed, withheld, contents


CONTENT_MARK = b'"content_sha256":"'  # an entry whose call's content was captured


def _write_content(handle: BinaryIO, content: ContentStore, seq: int, data: bytes) -> int:
    """The content line after entry `seq`; 0 when its sealed row is gone."""
    request_id = str(orjson.loads(data).get("request_id"))
    found = content.by_request([request_id]).get(request_id)
    if found is None:
        return 0
    line = {"seq": seq, "request_id": request_id, "sealed": found.sealed,
            "record": found.record, "unreadable": found.problem}  # fmt: skip
    handle.write(canonical_json({"content": line}) + b"\n")
    return 1


def _hash_before(conn: Connection, first: int) -> bytes:
    """The chain hash just before `first`: an entry, or the checkpoint kept at a prune cut."""
    if first <= 1:
        return GENESIS_HASH
    row = conn.execute(select(AuditEntry.hash).where(AuditEntry.seq == first - 1)).first()
    if row is None:
        cut = select(AuditCheckpoint.root_hash).where(AuditCheckpoint.size == first - 1)
        row = conn.execute(cut).first()
    if row is None:
        raise RuntimeError(f"no entry or checkpoint before seq {first}: the chain has a hole")
    return bytes(row[0])
