"""What the SIEM feed sends: each entry's export line, as an RFC 5424 message or a JSON line.

The payload of every message is exactly the line `sparkplane audit export` writes for the entry
(`{"h":"<entry hash>","e":<envelope>,"d":<data>}`, docs/audit.md), or `{"checkpoint":"<signed
note>"}` for a checkpoint, so the SIEM's copy can be checked byte for byte against the chain and
an export. As syslog (RFC 5424), with the seq and hash also in structured data for the SIEM's
parser:

    <PRI>1 2026-11-26T20:00:00.123456Z HOST sparkplane - api.request
        [sparkplane@32473 seq="42" hash="<hex>" kind="api.request" tenant="acme"] {"h":...}

Facility 13 (log audit); severity warning for `*_failed` kinds, notice for admin, audit,
console and installer kinds, informational for the rest. 32473 is the enterprise number
RFC 5612 reserves for documentation: the SD-ID only has to be unique to Sparkplane.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from datetime import datetime

from controlplane.audit.chain import canonical_json, export_line, format_time

FACILITY_LOG_AUDIT = 13
WARNING, NOTICE, INFORMATIONAL = 4, 5, 6
APP_NAME = "sparkplane"
SD_ID = "sparkplane@32473"
CHECKPOINT_MSGID = "audit.checkpoint"
_NOTICE_PREFIXES = ("admin.", "audit.", "console.", "installer.")
_SD_ESCAPE = re.compile(r'(["\\\]])')


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One entry or checkpoint to send; `position` orders both (a checkpoint right after the
    entry it covers)."""

    entry_seq: int  # the entry's seq; for a checkpoint, its size
    is_checkpoint: bool
    time: datetime
    kind: str
    tenant: str | None
    hash: bytes  # the entry hash (a checkpoint: the head hash it signs)
    payload: bytes  # the export line without its newline

    @property
    def position(self) -> tuple[int, bool]:
        return self.entry_seq, self.is_checkpoint


def entry_item(
    seq: int, moment: datetime, kind: str, tenant: str | None, envelope: bytes,
    data: bytes | None, entry_hash: bytes,
) -> FeedItem:  # fmt: skip
    line = export_line(entry_hash, envelope, data)[:-1]
    return FeedItem(seq, False, moment, kind, tenant, entry_hash, line)


def checkpoint_item(size: int, root_hash: bytes, note: str, created: datetime) -> FeedItem:
    payload = canonical_json({"checkpoint": note})
    return FeedItem(size, True, created, CHECKPOINT_MSGID, None, root_hash, payload)


def severity(kind: str) -> int:
    if kind.endswith("_failed"):
        return WARNING
    return NOTICE if kind.startswith(_NOTICE_PREFIXES) else INFORMATIONAL


def _sd_value(value: str) -> str:
    return _SD_ESCAPE.sub(r"\\\1", value)


def syslog_message(item: FeedItem, hostname: str) -> bytes:
    """The RFC 5424 message (no framing, no trailing newline)."""
    pri = FACILITY_LOG_AUDIT * 8 + severity(item.kind)
    # MSGID is at most 32 printable characters; kinds may be longer (the SD has the full one).
    msgid = item.kind if len(item.kind) <= 32 else "-"
    if item.is_checkpoint:
        params = f'size="{item.entry_seq}" head="{item.hash.hex()}"'
    else:
        params = f'seq="{item.entry_seq}" hash="{item.hash.hex()}" kind="{_sd_value(item.kind)}"'
        if item.tenant is not None:
            params += f' tenant="{_sd_value(item.tenant)}"'
    stamp = format_time(item.time)
    header = f"<{pri}>1 {stamp} {hostname} {APP_NAME} - {msgid} [{SD_ID} {params}] "
    return header.encode() + item.payload


def json_line(item: FeedItem) -> bytes:
    """The export line itself, newline-terminated (a JSON Lines file for a local shipper)."""
    return item.payload + b"\n"


def syslog_hostname() -> str:
    """RFC 5424 HOSTNAME: printable ASCII without spaces, at most 255 characters."""
    name = socket.gethostname() or "-"
    return "".join(ch for ch in name if 33 <= ord(ch) <= 126)[:255] or "-"
