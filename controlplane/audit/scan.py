"""The hot loop of offline verification: slice each export line, never re-serialise it.

In-order entries whose hashes match are handled inline (1,000,000 lines must verify in a few
seconds); anything unusual goes to `ChainChecker.entry`, which locates the problem.
"""

from __future__ import annotations

import binascii
import hashlib
from binascii import unhexlify
from collections.abc import Iterable

import orjson

from controlplane.audit.chain import DATA_SEPARATOR, ENVELOPE_OFFSET, LINE_START
from controlplane.audit.checker import KIND_AT, ROTATION_KIND, ChainChecker
from controlplane.audit.checkpoint import Checkpoint, CheckpointError, parse_checkpoint

CONTENT_START = b'{"content":'


def content_matches(line: bytes, entry_data: bytes) -> bool:
    """A content line (`audit export --content`) names the SHA-256 of its sealed token in the
    data of the entry just before it."""
    try:
        sealed = orjson.loads(line)["content"]["sealed"]
        digest = hashlib.sha256(sealed.encode()).hexdigest().encode()
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return False
    return b'"content_sha256":"' + digest + b'"' in entry_data


def scan_lines(
    lines: Iterable[bytes], checker: ChainChecker, first_number: int = 2
) -> list[tuple[Checkpoint, int | None]]:
    """Feed export lines (numbered from `first_number`) to `checker`; returns the checkpoints."""
    checkpoints: list[tuple[Checkpoint, int | None]] = []
    sha256, unhex = hashlib.sha256, unhexlify
    hashes, expected, prev = checker.hashes, checker.expected, checker.prev
    fast = withheld = 0
    data = b"null"  # the data of the last entry line: a content line belongs to it
    for number, line in enumerate(lines, start=first_number):
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
        elif line.startswith(CONTENT_START):
            if not content_matches(line, data):
                checker.problem("content_mismatch", "captured content does not match the "
                                "content_sha256 of the entry before it", line=number)  # fmt: skip
        elif not line.startswith(b'{"public_key":') and line.strip():
            checker.problem("malformed", "line is neither entry, checkpoint nor key", line=number)
    checker.expected, checker.prev = expected, prev
    report = checker.report
    report.entries, report.entries_valid = report.entries + fast, report.entries_valid + fast
    report.entries_withheld += withheld
    return checkpoints
