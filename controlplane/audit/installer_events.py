"""Installer lifecycle events (install, upgrade, rollback, uninstall) into the audit chain.

The installer runs before (and beside) the control plane, so it appends one JSON object per line
to ROOT/var/lib/sparkplane/installer/events.jsonl (`controlplane/appliance/events.py`):
`{"time": ..., "kind": "installer.<action>", "phase": ..., "version": ..., ...}`; the short form
`{"action": "<action>", ...}` is accepted too. `sparkplane audit import-installer-events FILE`
moves them into the chain as `installer.<action>` entries, keeping every other field. Each event
is identified by the SHA-256 of its line, so importing the same file twice (or after a crash
half-way) never records an event twice; the ids are kept in `installer_event_imports`, so an
`audit prune` that removed old entries does not let their events in again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import orjson
from sqlalchemy import Engine, insert, select

from controlplane.audit.chain import KIND_PATTERN
from controlplane.audit.models import AuditEntry, InstallerEventImport
from controlplane.audit.writer import AuditWriter

EVENTS_FILE_NAME = "installer-events.jsonl"
KIND_PREFIX = "installer."
ENVELOPE_KEYS = ("action", "kind", "tenant")  # become the entry's kind / envelope, not data


@dataclass
class ImportResult:
    imported: int
    skipped: int


class InstallerEventError(ValueError):
    """A line of the events file that is not a usable event."""


def event_action(event: object) -> str | None:
    """The action of an event: its `kind` minus `installer.`, or its `action`; None if neither.

    When both are given they must agree, so an entry's kind never contradicts its fields.
    """
    if not isinstance(event, dict):
        return None
    kind, action = event.get("kind"), event.get("action")
    from_kind = kind[len(KIND_PREFIX) :] if isinstance(kind, str) else None
    if kind is not None and (from_kind is None or not kind.startswith(KIND_PREFIX)):
        return None
    if action is not None and (not isinstance(action, str) or from_kind not in (None, action)):
        return None
    found = from_kind if from_kind is not None else action
    return found if found and KIND_PATTERN.fullmatch(KIND_PREFIX + found) else None


def parse_events(path: Path) -> list[tuple[str, dict[str, object]]]:
    """(event id, event) per non-empty line; each event needs a `kind` or an `action`."""
    events = []
    for number, raw in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InstallerEventError(f"{path}:{number}: not JSON ({exc})") from None
        if event_action(event) is None:
            raise InstallerEventError(
                f"{path}:{number}: needs a 'kind' like \"installer.install\" "
                f"(or an 'action' like \"install\"), and the two must agree"
            )
        events.append((hashlib.sha256(raw.strip()).hexdigest(), event))
    return events


def imported_event_ids(engine: Engine) -> set[str]:
    """Ids of the events imported so far: recorded in `installer_event_imports`, and (for
    imports older than that table) still in the chain, which are recorded there now."""
    with engine.begin() as conn:
        recorded = set(conn.scalars(select(InstallerEventImport.event_id)))
        rows = conn.execute(
            select(AuditEntry.seq, AuditEntry.data).where(
                AuditEntry.kind.like("installer.%"), AuditEntry.data.is_not(None)
            )
        )
        in_chain = {str(orjson.loads(data or b"{}").get("event_id")): seq for seq, data in rows}
        missing = [
            {"event_id": event_id, "seq": seq}
            for event_id, seq in in_chain.items()
            if event_id not in recorded and event_id != "None"
        ]
        if missing:
            conn.execute(insert(InstallerEventImport), missing)
    return recorded | set(in_chain)


def remember_import(engine: Engine, event_id: str, seq: int) -> None:
    with engine.begin() as conn:
        conn.execute(insert(InstallerEventImport).values(event_id=event_id, seq=seq))


async def import_events(engine: Engine, writer: AuditWriter, path: Path) -> ImportResult:
    events = parse_events(path)
    seen = imported_event_ids(engine)
    imported = 0
    for event_id, event in events:
        if event_id in seen:
            continue
        fields = {key: value for key, value in event.items() if key not in ENVELOPE_KEYS}
        fields["event_id"] = event_id
        seq = await writer.record(f"{KIND_PREFIX}{event_action(event)}", **fields)
        # A crash between the two leaves the entry in the chain, which counts as imported.
        remember_import(engine, event_id, seq)
        seen.add(event_id)
        imported += 1
    return ImportResult(imported, len(events) - imported)
