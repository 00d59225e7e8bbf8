"""Installer lifecycle events (install, upgrade, rollback, uninstall) into the audit chain.

The installer runs before (and beside) the control plane, so it appends one JSON object per line
to an events file; `sparkplane audit import-installer-events FILE` moves them into the chain as
`installer.<action>` entries. Each event is identified by the SHA-256 of its line, so importing
the same file twice (or after a crash half-way) never records an event twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import orjson
from sqlalchemy import Engine, select

from controlplane.audit.chain import KIND_PATTERN
from controlplane.audit.models import AuditEntry
from controlplane.audit.writer import AuditWriter

EVENTS_FILE_NAME = "installer-events.jsonl"


@dataclass
class ImportResult:
    imported: int
    skipped: int


class InstallerEventError(ValueError):
    """A line of the events file that is not a usable event."""


def parse_events(path: Path) -> list[tuple[str, dict[str, object]]]:
    """(event id, event) per non-empty line; each event needs a string `action`."""
    events = []
    for number, raw in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InstallerEventError(f"{path}:{number}: not JSON ({exc})") from None
        action = event.get("action") if isinstance(event, dict) else None
        if not isinstance(action, str) or not KIND_PATTERN.match(f"installer.{action}"):
            raise InstallerEventError(f"{path}:{number}: needs an 'action' like \"install\"")
        events.append((hashlib.sha256(raw.strip()).hexdigest(), event))
    return events


def imported_event_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditEntry.data).where(
                AuditEntry.kind.like("installer.%"), AuditEntry.data.is_not(None)
            )
        )
        return {str(orjson.loads(data or b"{}").get("event_id")) for (data,) in rows}


async def import_events(engine: Engine, writer: AuditWriter, path: Path) -> ImportResult:
    events = parse_events(path)
    seen = imported_event_ids(engine)
    imported = 0
    for event_id, event in events:
        if event_id in seen:
            continue
        fields = {key: value for key, value in event.items() if key not in ("action", "tenant")}
        fields["event_id"] = event_id
        await writer.record(f"installer.{event['action']}", **fields)
        seen.add(event_id)
        imported += 1
    return ImportResult(imported, len(events) - imported)
