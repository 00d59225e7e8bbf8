"""The hash chain: canonical JSON, domain-separated hashes, entries and the export line layout.

Every entry is two canonical JSON documents:

- the *data* (the fields given to `record`, minus `tenant`), hashed on its own:
  `digest = SHA-256(0x01 || data)`;
- the *envelope* `{"data": hex(digest), "kind", "seq", "tenant", "time"}`, which is what the chain
  links: `hash = SHA-256(0x00 || prev_hash || envelope)`.

Splitting them lets an export withhold (or retention redact) the data of an entry while the chain
still verifies, and keeps content capture to ciphertext only. docs/audit.md is the auditor's spec.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

ENTRY_PREFIX = b"\x00"  # RFC 6962 uses 0x00 for leaves; we use it for chain links
DATA_PREFIX = b"\x01"
GENESIS_HASH = bytes(32)
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
MAX_KIND_LENGTH = 64

# Export line: {"h":"<64 hex>","e":<envelope>,"d":<data>|null}\n  (see docs/audit.md)
LINE_START = b'{"h":"'
ENVELOPE_OFFSET = 76  # len('{"h":"') + 64 + len('","e":')
DATA_SEPARATOR = b',"d":'
DIGEST_SLICE = slice(ENVELOPE_OFFSET + 9, ENVELOPE_OFFSET + 73)  # after '{"data":"'


class ChainFormatError(ValueError):
    """Input that cannot become (or is not) a well-formed chain entry."""


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8; raises ChainFormatError for unserialisable values."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise ChainFormatError(f"audit fields are not JSON-serialisable: {exc}") from exc


def data_digest(data: bytes) -> bytes:
    return hashlib.sha256(DATA_PREFIX + data).digest()


def link_hash(prev_hash: bytes, envelope: bytes) -> bytes:
    return hashlib.sha256(ENTRY_PREFIX + prev_hash + envelope).digest()


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. 2026-11-26T20:17:20.123456Z."""
    # Not strftime(): it imports the time module and builds a struct on every call, and this
    # runs for every audit entry.
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def check_kind(kind: str) -> None:
    if not isinstance(kind, str) or len(kind) > MAX_KIND_LENGTH or not KIND_PATTERN.fullmatch(kind):
        raise ChainFormatError(
            f"audit kind {kind!r} must be lowercase dotted words like 'api.request' "
            f"(at most {MAX_KIND_LENGTH} characters)"
        )


@dataclass(frozen=True, slots=True)
class ChainEntry:
    seq: int
    kind: str
    tenant: str | None
    time: datetime
    envelope: bytes
    data: bytes | None
    hash: bytes


def build_entry(
    prev_hash: bytes, seq: int, kind: str, tenant: str | None, data: bytes, moment: datetime
) -> ChainEntry:
    """Make entry `seq` that follows `prev_hash`; `data` is already canonical JSON bytes."""
    envelope = canonical_json(
        {
            "data": data_digest(data).hex(),
            "kind": kind,
            "seq": seq,
            "tenant": tenant,
            "time": format_time(moment),
        }
    )
    return ChainEntry(seq, kind, tenant, moment, envelope, data, link_hash(prev_hash, envelope))


def export_line(entry_hash: bytes, envelope: bytes, data: bytes | None) -> bytes:
    """One JSONL line whose canonical parts the verifier can slice out without re-serialising."""
    return b"".join(
        (LINE_START, entry_hash.hex().encode(), b'","e":', envelope, DATA_SEPARATOR,
         b"null" if data is None else data, b"}\n")
    )  # fmt: skip


def split_line(line: bytes) -> tuple[bytes, bytes, bytes | None]:
    """(stored hash, envelope, data or None) of an export line; ChainFormatError if malformed."""
    body = line.rstrip(b"\n")
    end = body.find(DATA_SEPARATOR, ENVELOPE_OFFSET)
    if not body.startswith(LINE_START) or end < 0 or not body.endswith(b"}"):
        raise ChainFormatError("not an audit entry line")
    try:
        stored = bytes.fromhex(body[6:70].decode("ascii"))
    except ValueError as exc:
        raise ChainFormatError("entry hash is not 64 hex digits") from exc
    data = body[end + len(DATA_SEPARATOR) : -1]
    return stored, body[ENVELOPE_OFFSET:end], None if data == b"null" else data


def envelope_seq(envelope: bytes) -> int:
    """The `seq` of an envelope, read without a full JSON parse."""
    start = envelope.find(b'"seq":')
    stop = envelope.find(b",", start)
    if start < 0 or stop < 0:
        raise ChainFormatError("envelope has no seq")
    try:
        return int(envelope[start + 6 : stop])
    except ValueError as exc:
        raise ChainFormatError("envelope seq is not an integer") from exc
