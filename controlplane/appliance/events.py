"""Installer lifecycle events, appended to ROOT/var/lib/sparkplane/installer/events.jsonl.

One JSON object per line: `time` (UTC, RFC 3339), `kind` (`installer.<action>`), and the
action's fields. The audit chain imports them (kind names follow docs/architecture.md), so a
line is written once, fsync'ed, and never rewritten.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from controlplane.appliance.layout import Layout

# Readable by the control plane's service user (the console's System page shows the events);
# they carry versions, phases and errors, never a secret.
EVENTS_MODE = 0o644


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def record_event(layout: Layout, action: str, **fields: Any) -> dict[str, Any]:
    """Append one event; `action` becomes kind `installer.<action>`."""
    event = {"time": _now(), "kind": f"installer.{action}", **fields}
    layout.installer_state.mkdir(parents=True, exist_ok=True)
    line = json.dumps(event, sort_keys=True, default=str) + "\n"
    fd = os.open(layout.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, EVENTS_MODE)
    try:
        if os.fstat(fd).st_uid == os.geteuid():  # a journal an older installer made 0640
            os.fchmod(fd, EVENTS_MODE)
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return event


def read_events(layout: Layout) -> list[dict[str, Any]]:
    """Every recorded event, oldest first; a torn last line (crash mid-write) is skipped."""
    if not layout.events.is_file():
        return []
    events = []
    for line in layout.events.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
