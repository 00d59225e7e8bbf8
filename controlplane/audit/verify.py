"""Verification of an export file (offline: no database, no network) and of the live database."""

from __future__ import annotations

import base64
import binascii
import hashlib
from binascii import unhexlify
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from controlplane.audit.chain import (
    DATA_SEPARATOR,
    ENVELOPE_OFFSET,
    GENESIS_HASH,
    LINE_START,
    canonical_json,
)
from controlplane.audit.checker import KIND_AT, ROTATION_KIND, ChainChecker, Report, TrustedKeys
from controlplane.audit.checkpoint import Checkpoint, CheckpointError, key_id, parse_checkpoint
from controlplane.audit.export import FORMAT, HEADER_SIGNATURE_CONTEXT
from controlplane.audit.models import AuditCheckpoint, AuditEntry
from installer.signing import load_public_key, verify

DEFAULT_ORIGIN = "sparkplane/audit"


def trusted_keys(pubkeys: Iterable[Path], origin: str = DEFAULT_ORIGIN) -> TrustedKeys:
    """Key id -> (name, key) for the PEM public keys the auditor trusts."""
    trusted: TrustedKeys = {}
    for path in pubkeys:
        public = load_public_key(Path(path))
        trusted[key_id(origin, public)] = (origin, public)
    return trusted


def verify_export(path: Path, pubkeys: Iterable[Path]) -> Report:
    """Verify an export file; every problem is located by seq and line number."""
    with Path(path).open("rb", buffering=1 << 20) as handle:
        header_line = handle.readline()
        header, header_problem = _parse_header(header_line)
        origin = header.get("origin", DEFAULT_ORIGIN)
        base = header.get("first_seq", 1)
        anchor = bytes.fromhex(header.get("prev_hash", GENESIS_HASH.hex()))
        checker = ChainChecker(base, anchor, trusted_keys(pubkeys, origin))
        if header_problem:
            checker.problem("bad_header", header_problem, line=1)
        checkpoints = _scan(handle, checker)
    if not header_problem:
        _check_header_signature(header, header_line, checker)
    return checker.finish(checkpoints, header.get("last_seq"))


def _scan(handle: Iterable[bytes], checker: ChainChecker) -> list[tuple[Checkpoint, int | None]]:
    """The hot loop: slice each entry line, never re-serialise it (docs/audit.md).

    In-order entries whose hashes match are handled inline (1,000,000 lines must verify in a
    few seconds); anything unusual goes to `checker.entry`, which locates the problem.
    """
    checkpoints: list[tuple[Checkpoint, int | None]] = []
    sha256, unhex = hashlib.sha256, unhexlify
    hashes, expected, prev = checker.hashes, checker.expected, checker.prev
    fast = withheld = 0
    for number, line in enumerate(handle, start=2):
        if line.startswith(LINE_START):
            end = line.find(DATA_SEPARATOR, ENVELOPE_OFFSET)
            envelope = line[ENVELOPE_OFFSET:end]
            at = envelope.find(b'"seq":', 73)
            try:
                seq = int(envelope[at + 6 : envelope.index(b",", at)])
                stored = unhex(line[6:70])
            except (ValueError, binascii.Error):
                checker.problem("malformed", "unreadable entry line", line=number)
                continue
            if line.endswith(b"}\n"):
                data = line[end + 5 : -2]
            elif line.endswith(b"}"):  # the last line may lack its newline
                data = line[end + 5 : -1]
            else:
                end = -1
            if end < 0 or at < 0:
                checker.problem("malformed", "unreadable entry line", line=number, seq=seq)
                continue
            try:
                intact = (
                    seq == expected
                    and prev is not None
                    and sha256(b"\x00" + prev + envelope).digest() == stored
                    and (
                        data == b"null" or sha256(b"\x01" + data).digest() == unhex(envelope[9:73])
                    )
                    and not envelope.startswith(ROTATION_KIND, KIND_AT)
                )
            except binascii.Error:  # a damaged digest: let the checker name the problem
                intact = False
            if intact:
                hashes += stored
                prev, expected, fast = stored, expected + 1, fast + 1
                withheld += data == b"null"
                continue
            checker.expected, checker.prev = expected, prev
            checker.entry(seq, stored, envelope, None if data == b"null" else data, number)
            expected, prev = checker.expected, checker.prev
        elif line.startswith(b'{"checkpoint":'):
            try:
                checkpoints.append((parse_checkpoint(orjson.loads(line)["checkpoint"]), number))
            except (CheckpointError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
                checker.problem("malformed", f"unreadable checkpoint: {exc}", line=number)
        elif not line.startswith(b'{"public_key":') and line.strip():
            checker.problem("malformed", "line is neither entry, checkpoint nor key", line=number)
    checker.expected, checker.prev = expected, prev
    report = checker.report
    report.entries, report.entries_valid = report.entries + fast, report.entries_valid + fast
    report.entries_withheld += withheld
    return checkpoints


def _parse_header(line: bytes) -> tuple[dict[str, Any], str | None]:
    try:
        header = orjson.loads(line)["header"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {}, "the first line is not an export header"
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return {}, f"the header's format is not {FORMAT}"
    expected = {"first_seq": int, "last_seq": int, "prev_hash": str, "key_id": str, "origin": str}
    for name, kind in expected.items():
        if not isinstance(header.get(name), kind):
            return {}, f"the header's {name} is missing or not a {kind.__name__}"
    try:
        if (
            len(bytes.fromhex(header["prev_hash"])) != 32
            or len(bytes.fromhex(header["key_id"])) != 4
        ):
            raise ValueError
    except ValueError:
        return {}, "the header's prev_hash or key_id is not hex of the right length"
    return header, None


def _check_header_signature(header: dict[str, Any], line: bytes, checker: ChainChecker) -> None:
    """The header (range, prev hash, reason) is signed by the audit key at export time."""
    kid = bytes.fromhex(str(header.get("key_id", "")))
    known = checker.trusted.get(kid)
    if known is None:
        checker.problem("unknown_key", f"export header signed by unknown key {kid.hex()}", line=1)
        return
    sig = base64.b64decode(orjson.loads(line).get("sig", ""))
    if not verify(known[1], HEADER_SIGNATURE_CONTEXT + canonical_json(header), sig):
        checker.problem("bad_signature", "export header signature is invalid", line=1)


def verify_live(engine: Engine, pubkeys: Iterable[Path], origin: str = DEFAULT_ORIGIN) -> Report:
    """Verify the chain in the database, from the oldest retained entry to the head."""
    trusted = trusted_keys(pubkeys, origin)
    with engine.connect() as conn:
        base = conn.execute(select(func.min(AuditEntry.seq))).scalar() or 1
        notes = conn.execute(
            select(AuditCheckpoint.note).where(AuditCheckpoint.size >= base - 1)
        ).scalars()
        checkpoints: list[tuple[Checkpoint, int | None]] = []
        anchor = GENESIS_HASH if base == 1 else None
        for note in notes:
            checkpoint = parse_checkpoint(note)
            checkpoints.append((checkpoint, None))
            if checkpoint.size == base - 1:
                anchor = checkpoint.root_hash  # kept at the prune cut; its signature is checked
        checker = ChainChecker(base, anchor, trusted)
        if anchor is None:
            checker.problem("missing", f"no checkpoint at the retention cut {base - 1}", seq=base)
        rows = conn.execution_options(yield_per=10_000).execute(
            select(AuditEntry.seq, AuditEntry.hash, AuditEntry.envelope, AuditEntry.data).order_by(
                AuditEntry.seq
            )
        )
        for seq, stored, envelope, data in rows:
            checker.entry(int(seq), bytes(stored), bytes(envelope), data and bytes(data), None)
    return checker.finish(checkpoints, None)
