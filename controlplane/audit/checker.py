"""The verification core shared by the offline (export file) and live (database) verifiers.

Feed entries in the order they appear, then checkpoints; `finish` returns a report that names
every problem with its sequence number (and line, for files). Stored hashes are kept in one
bytearray indexed by seq, so out-of-order entries can still be linked and checkpoints checked
after the single pass.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from binascii import unhexlify
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controlplane.audit.checkpoint import Checkpoint, check_signature, key_id

ZERO = bytes(32)
MAX_GAP = 1_000_000  # a forged seq far ahead must not make us allocate gigabytes
MAX_PROBLEMS = 1000
KIND_AT = 83  # '{"data":"' + 64 hex + '","kind":"'
ROTATION_KIND = b'audit.key_rotated"'
TrustedKeys = dict[bytes, tuple[str, Ed25519PublicKey]]


@dataclass
class Problem:
    kind: str  # modified|missing|reordered|inserted|truncated|malformed|bad_signature|...
    detail: str
    seq: int | None = None
    line: int | None = None
    checkpoint: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Report:
    entries: int = 0
    entries_valid: int = 0
    entries_withheld: int = 0
    checkpoints: int = 0
    checkpoints_valid: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    covered_to: int = 0
    uncovered: int = 0
    problems: list[Problem] = field(default_factory=list)
    problems_total: int = 0

    @property
    def valid(self) -> bool:
        return self.problems_total == 0

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "problems"}
        return {"valid": self.valid, **data, "problems": [p.as_dict() for p in self.problems]}


class ChainChecker:
    def __init__(
        self,
        base_seq: int,
        anchor: bytes | None,
        trusted: TrustedKeys,
        last_seq: int | None = None,
    ) -> None:
        self.base, self.last = base_seq, last_seq  # last: the signed end of an export
        self.anchor = anchor
        self.prev: bytes | None = anchor
        self.expected = base_seq
        self.hashes = bytearray()
        self.gaps: set[int] = set()
        self.waiting: dict[int, tuple[int, bytes, bytes, int | None, bool]] = {}
        self.bad_computed: dict[int, bytes] = {}
        self.bad_seqs: list[int] = []
        self.rotations: list[tuple[int, bytes]] = []
        self.rotations_done: set[int] = set()
        self.trusted = dict(trusted)
        self.report = Report(first_seq=base_seq)
        self.claimed_end = 0

    def problem(self, kind: str, detail: str, **where: int | None) -> None:
        self.report.problems_total += 1
        if len(self.report.problems) < MAX_PROBLEMS:
            self.report.problems.append(Problem(kind, detail, **where))
        if where.get("seq") is not None:
            self.bad_seqs.append(where["seq"])  # type: ignore[arg-type]

    def entry(
        self, seq: int, stored: bytes, envelope: bytes, data: bytes | None, line: int | None
    ) -> None:
        """One entry as found: its seq (from the envelope), stored hash, envelope and data."""
        self.report.entries += 1
        content_ok = True
        if data is None:
            self.report.entries_withheld += 1
        elif not _digest_matches(envelope, data):
            content_ok = False
            self.problem("modified", "entry data does not match its digest", seq=seq, line=line)
        if data is not None and envelope.startswith(ROTATION_KIND, KIND_AT):
            self.rotations.append((seq, data))
        if seq == self.expected:
            self.hashes += stored
            self.expected = seq + 1
            prev, self.prev = self.prev, stored
            self._link(seq, prev, stored, envelope, line, content_ok)
        elif seq > self.expected and seq - self.expected <= MAX_GAP and seq <= (self.last or seq):
            self.gaps.update(range(self.expected, seq))
            self.hashes += bytes(32 * (seq - self.expected)) + stored
            self.expected, self.prev = seq + 1, stored
            self.waiting[seq - 1] = (seq, stored, envelope, line, content_ok)
        elif seq in self.gaps:
            self.gaps.discard(seq)
            self.problem("reordered", f"entry {seq} appears after entry {self.expected - 1}",
                         seq=seq, line=line)  # fmt: skip
            self.hashes[(seq - self.base) * 32 : (seq - self.base + 1) * 32] = stored
            self._link(seq, self._stored(seq - 1), stored, envelope, line, content_ok)
        else:
            self.problem("inserted", f"unexpected entry {seq} (duplicate or out of range)",
                         seq=seq, line=line)  # fmt: skip
            return
        pending = self.waiting.pop(seq, None)
        if pending is not None:
            self._link(pending[0], stored, *pending[1:])

    def _stored(self, seq: int) -> bytes | None:
        if seq == self.base - 1:
            return self.anchor
        index = (seq - self.base) * 32
        value = bytes(self.hashes[index : index + 32]) if 0 <= index < len(self.hashes) else ZERO
        return None if value == ZERO else value

    def _link(self, seq: int, prev: bytes | None, stored: bytes, envelope: bytes,
              line: int | None, content_ok: bool) -> None:  # fmt: skip
        if prev is None:
            self.waiting[seq - 1] = (seq, stored, envelope, line, content_ok)
            return
        computed = hashlib.sha256(b"\x00" + prev + envelope).digest()
        if computed != stored:
            alt = self.bad_computed.get(seq - 1)
            if alt is None or hashlib.sha256(b"\x00" + alt + envelope).digest() != stored:
                self.bad_computed[seq] = computed
                self.problem("modified", "entry hash does not match its content and predecessor",
                             seq=seq, line=line)  # fmt: skip
                return
        if content_ok:
            self.report.entries_valid += 1

    def finish(
        self, checkpoints: list[tuple[Checkpoint, int | None]], end_seq: int | None
    ) -> Report:
        """Check checkpoints (ascending), coverage, missing entries and truncation."""
        report, last = self.report, self.expected - 1
        report.last_seq = last if last >= self.base else None
        missing = sorted(self.gaps)
        for start, stop in _ranges(missing):
            self.problem("missing", f"entries {start}..{stop} are missing", seq=start)
        self.claimed_end = end_seq or 0
        self._settle_checkpoints(sorted(checkpoints, key=lambda c: c[0].size), last)
        if last < self.claimed_end:
            after = f" after checkpoint {report.covered_to}" if report.covered_to == last else ""
            self.problem("truncated",
                         f"entries end at {last}{after}, but the export reaches {self.claimed_end}",
                         seq=last + 1)  # fmt: skip
        report.uncovered = max(0, last - max(report.covered_to, self.base - 1))
        return report

    def _settle_checkpoints(
        self, checkpoints: list[tuple[Checkpoint, int | None]], last: int
    ) -> None:
        """Accept checkpoints until nothing changes: each accepted one can vouch for rotated keys
        (forward and backward), which can make earlier or later checkpoints verifiable."""
        self.report.checkpoints = len(checkpoints)
        first_bad = min(self.bad_seqs, default=None)
        accepted: set[int] = set()
        progress = True
        while progress:
            progress = False
            for index, (cp, _line) in enumerate(checkpoints):
                if index not in accepted and self._judge(cp, last) == "ok":
                    accepted.add(index)
                    progress = True
                    self.report.covered_to = max(self.report.covered_to, cp.size)
                    if first_bad is None or first_bad > cp.size:
                        self._trust_rotations(cp.size)
        good_sizes = sorted(checkpoints[i][0].size for i in accepted)
        self.report.checkpoints_valid = len(accepted)
        for index, (cp, line) in enumerate(checkpoints):
            verdict = "ok" if index in accepted else self._judge(cp, last)
            if verdict in ("unknown_key", "bad_signature"):
                self.problem(verdict, f"checkpoint {cp.size}: {verdict.replace('_', ' ')}",
                             checkpoint=cp.size, line=line)  # fmt: skip
            elif verdict == "mismatch":
                since = max((s for s in good_sizes if s < cp.size), default=self.base - 1) + 1
                self.problem("checkpoint_mismatch",
                             f"entries {since}..{cp.size} differ from the signed checkpoint",
                             checkpoint=cp.size, line=line, seq=since)  # fmt: skip

    def _judge(self, cp: Checkpoint, last: int) -> str:
        verdict = check_signature(cp, self.trusted)
        if verdict is not None:
            return verdict
        if cp.size > last:
            self.claimed_end = max(self.claimed_end, cp.size)  # signed proof that more existed
            return "beyond"
        stored = self._stored(cp.size)
        if cp.size < self.base - 1 or stored is None:
            return "unchecked"  # before the retained range, or its entry is missing (reported)
        return "ok" if stored == cp.root_hash else "mismatch"

    def _trust_rotations(self, size: int) -> None:
        """Keys named by a rotation entry that a trusted checkpoint covers become trusted: the
        new key and the previous one (the checkpoint authenticates the whole chain before it)."""
        for seq, data in self.rotations:
            if seq > size or seq in self.rotations_done:
                continue
            self.rotations_done.add(seq)
            try:
                fields = orjson.loads(data)
                name = fields["key_name"]
                for field_name in ("public_key", "previous_public_key"):
                    raw = base64.b64decode(fields[field_name])
                    public = Ed25519PublicKey.from_public_bytes(raw)
                    self.trusted[key_id(name, public)] = (name, public)
            except (ValueError, KeyError, TypeError) as exc:
                self.problem("malformed", f"key rotation entry is unreadable: {exc}", seq=seq)


def _digest_matches(envelope: bytes, data: bytes) -> bool:
    try:
        return hashlib.sha256(b"\x01" + data).digest() == unhexlify(envelope[9:73])
    except binascii.Error:
        return False


def _ranges(values: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for value in values:
        if ranges and ranges[-1][1] == value - 1:
            ranges[-1] = (ranges[-1][0], value)
        else:
            ranges.append((value, value))
    return ranges
