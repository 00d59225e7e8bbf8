"""Captured content: one sealed row per call of a tenant that opts in, referenced from the chain.

The gateway hands over a record (the fields of `CAPTURED_FIELDS`, docs/audit.md); it is sealed
with `ContentVault.seal` under the tenant's data key and stored in `audit_content` under the
call's request id. The call's `api.completion` entry carries `content_sha256`, the SHA-256 of
the sealed token, so the chain binds the ciphertext while no clear text ever reaches the
database (or its WAL). Reading decrypts with the same key; once the tenant is erased the key is
gone and every row reads as erased.

The gateway's records are sealed and written by group commit (`add`), in a thread: while one
batch is sealed and inserted, the records that arrive wait and go together in the next one, so
capture costs one key look-up per tenant and one commit per batch, not per call. A caller
returns once its row is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, insert, select

from controlplane.audit.content import ContentError, ContentShredded, ContentVault
from controlplane.audit.models import AuditContent

# What one sealed record holds, in this order (docs/audit.md lists exactly these).
CAPTURED_FIELDS = ("endpoint", "model", "stream", "request", "choices", "finished")
# What each entry of `choices` holds.
CHOICE_FIELDS = ("index", "text", "reasoning", "tool_calls", "finish_reason")


_Call = tuple[str, str, Callable[[], dict[str, Any]]]  # tenant, request id, its record


def _row(tenant: str, request_id: str, sealed: str) -> dict[str, Any]:
    return {"request_id": request_id, "tenant": tenant, "created": datetime.now(UTC),
            "sealed": sealed}  # fmt: skip


def content_digest(sealed: str) -> str:
    """The `content_sha256` an api.completion entry carries for this sealed token."""
    return hashlib.sha256(sealed.encode()).hexdigest()


@dataclass(frozen=True)
class CapturedRecord:
    request_id: str
    tenant: str
    created: datetime
    sealed: str
    record: dict[str, Any] | None  # None: unreadable (the tenant was erased)
    problem: str | None = None

    @property
    def digest(self) -> str:
        return content_digest(self.sealed)


class ContentStore:
    def __init__(self, engine: Engine, vault: ContentVault) -> None:
        self.engine = engine
        self.vault = vault
        self._waiting: list[tuple[_Call, asyncio.Future[str]]] = []
        self._committing: asyncio.Task[None] | None = None

    def save(self, tenant: str, request_id: str, record: dict[str, Any]) -> str:
        """Seal and store one call's record in its own transaction; its `content_sha256`."""
        sealed = self.vault.seal(tenant, orjson.dumps(record))
        self._insert([_row(tenant, request_id, sealed)])
        return content_digest(sealed)

    async def add(self, tenant: str, request_id: str, record: Callable[[], dict[str, Any]]) -> str:
        """Seal `record()` (built in the committing thread: parsing a long stream is CPU work)
        and store it with the others that wait; its `content_sha256` once committed."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append(((tenant, request_id, record), done))
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_waiting())
        return await asyncio.shield(done)

    async def _commit_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                outcomes = await asyncio.to_thread(self._seal_and_insert, [c for c, _ in batch])
            except Exception as exc:  # the insert failed: every caller of the batch learns it
                outcomes = [exc] * len(batch)
            for outcome, (_, done) in zip(outcomes, batch, strict=True):
                if isinstance(outcome, Exception):
                    done.set_exception(outcome)
                    done.add_done_callback(lambda future: future.exception())
                else:
                    done.set_result(outcome)

    def _seal_and_insert(self, calls: list[_Call]) -> list[str | Exception]:
        sealers: dict[str, Callable[[bytes], str]] = {}
        rows: list[dict[str, Any]] = []
        outcomes: list[str | Exception] = []
        for tenant, request_id, record in calls:
            try:
                if tenant not in sealers:
                    sealers[tenant] = self.vault.sealer(tenant)
                sealed = sealers[tenant](orjson.dumps(record()))
            except Exception as exc:  # this call's record only
                outcomes.append(exc)
                continue
            rows.append(_row(tenant, request_id, sealed))
            outcomes.append(content_digest(sealed))
        if rows:
            self._insert(rows)
        return outcomes

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(AuditContent), rows)

    def read(self, tenant: str, limit: int = 50) -> list[CapturedRecord]:
        """The tenant's newest captured records, decrypted (or marked unreadable)."""
        query = (
            select(AuditContent)
            .where(AuditContent.tenant == tenant)
            .order_by(AuditContent.created.desc(), AuditContent.request_id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [self._open(row.request_id, row.tenant, row.created, row.sealed) for row in rows]

    def by_request(self, request_ids: Iterable[str]) -> dict[str, CapturedRecord]:
        """The records of these calls (those that have one), decrypted where the key lives."""
        wanted = list(request_ids)
        found: dict[str, CapturedRecord] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                query = select(AuditContent).where(
                    AuditContent.request_id.in_(wanted[start : start + 500])
                )
                for row in conn.execute(query):
                    found[row.request_id] = self._open(
                        row.request_id, row.tenant, row.created, row.sealed
                    )
        return found

    def _open(self, request_id: str, tenant: str, created: datetime, sealed: str) -> CapturedRecord:
        try:
            record = orjson.loads(self.vault.open(tenant, sealed))
        except ContentShredded:
            return CapturedRecord(request_id, tenant, created, sealed, None, "erased")
        except ContentError as exc:
            return CapturedRecord(request_id, tenant, created, sealed, None, str(exc))
        return CapturedRecord(request_id, tenant, created, sealed, record)
