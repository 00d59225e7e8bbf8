"""Verification of an export file (offline: no database, no network) and of the live database."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from controlplane.audit.chain import GENESIS_HASH, canonical_json
from controlplane.audit.checker import ChainChecker, Report, TrustedKeys
from controlplane.audit.checkpoint import Checkpoint, key_id, parse_checkpoint
from controlplane.audit.export import FORMAT, HEADER_SIGNATURE_CONTEXT
from controlplane.audit.models import AuditCheckpoint, AuditEntry
from controlplane.audit.parallel import parallel_scan
from controlplane.audit.scan import scan_lines
from controlplane.core.signing import load_public_key, verify

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
    path = Path(path)
    with path.open("rb", buffering=1 << 20) as handle:
        header_line = handle.readline()
        header, header_problem = _parse_header(header_line)
        origin = header.get("origin", DEFAULT_ORIGIN)
        base = header.get("first_seq", 1)
        anchor = bytes.fromhex(header.get("prev_hash", GENESIS_HASH.hex()))
        last = header.get("last_seq")
        checker = ChainChecker(base, anchor, trusted_keys(pubkeys, origin), last)
        if header_problem:
            checker.problem("bad_header", header_problem, line=1)
        checkpoints = None if header_problem else parallel_scan(path, len(header_line), checker)
        if checkpoints is None:
            checkpoints = scan_lines(handle, checker)
    report = checker.finish(checkpoints, last)
    if not header_problem:  # after finish: keys learnt from rotations may have signed it
        _check_header_signature(header, header_line, checker)
    if report.uncovered:  # an export always ends on a checkpoint: anything past it was added
        first = report.covered_to + 1 if report.covered_to else report.first_seq
        checker.problem("uncovered", f"{report.uncovered} entries from {first} on are not "
                        "covered by any valid checkpoint", seq=first)  # fmt: skip
    return report


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


def format_report(report: Report) -> str:
    """The human summary: counts, then one line per located problem, then VALID/INVALID."""
    lines = [
        f"entries {report.first_seq}..{report.last_seq}: {report.entries_valid}/{report.entries} "
        f"valid ({report.entries_withheld} with data withheld)",
        f"checkpoints: {report.checkpoints_valid}/{report.checkpoints} valid; "
        f"signed coverage up to entry {report.covered_to}"
        + (f", {report.uncovered} newer entries not yet checkpointed" if report.uncovered else ""),
    ]
    for problem in report.problems:
        where = ", ".join(
            f"{name} {value}"
            for name, value in (("seq", problem.seq), ("line", problem.line),
                                ("checkpoint", problem.checkpoint))
            if value is not None
        )  # fmt: skip
        lines.append(f"  {problem.kind} ({where}): {problem.detail}")
    hidden = report.problems_total - len(report.problems)
    if hidden:
        lines.append(f"  ... and {hidden} more problems")
    lines.append("VALID" if report.valid else f"INVALID: {report.problems_total} problem(s)")
    return "\n".join(lines)
