"""Property tests: every kind of tampering with an export is detected and located."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.audit import AuditWriter
from controlplane.audit.chain import canonical_json, data_digest, export_line, link_hash, split_line
from controlplane.audit.checkpoint import CheckpointSigner, parse_checkpoint
from controlplane.audit.export import export_audit, sign_header
from controlplane.audit.verify import verify_export
from tests.controlplane.audit.conftest import sqlite_store

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Export:
    """An export file split into lines, with helpers to write tampered copies."""

    def __init__(self, path: Path, pubkey: Path) -> None:
        self.lines = path.read_bytes().splitlines(keepends=True)
        self.pubkey = pubkey
        self.entry_lines = [i for i, line in enumerate(self.lines) if line.startswith(b'{"h":"')]
        self.checkpoint_lines = [
            i for i, ln in enumerate(self.lines) if ln.startswith(b'{"checkpoint"')
        ]

    def seq_at(self, index: int) -> int:
        return orjson.loads(self.lines[index])["e"]["seq"]

    def verify(self, lines: list[bytes], tmp: Path):
        target = tmp / "tampered.jsonl"
        target.write_bytes(b"".join(lines))
        return verify_export(target, [self.pubkey])


@pytest.fixture(scope="module", params=["plain", "tenant-filter-and-key-rotation"])
def export(request, tmp_path_factory) -> Export:
    """A plain export, and one that withholds a tenant's data and spans a key rotation
    (the auditor then trusts only the first key)."""
    directory = tmp_path_factory.mktemp("export")
    engine = sqlite_store(directory)
    variant = request.param != "plain"

    async def build() -> None:
        audit = AuditWriter(engine, directory / "audit-signing.key", checkpoint_every=8)
        await audit.start()
        (directory / "first.pub").write_bytes((directory / "audit-signing.pub").read_bytes())
        for i in range(60):
            await audit.record("api.request", tenant=("acme", "beta")[i % 2], n=i, status=200)
            if variant and i == 30:
                await audit.rotate_key()
        await export_audit(engine, audit, directory / "export.jsonl", reason="property tests",
                           tenant="acme" if variant else None)  # fmt: skip
        await audit.close()

    asyncio.run(build())
    engine.dispose()
    result = Export(directory / "export.jsonl", directory / "first.pub")
    assert result.verify(result.lines, directory).valid
    return result


def located(report, *, seqs=(), line=None, kinds=None) -> bool:
    assert not report.valid, "tampering went undetected"
    return any(
        (p.seq in seqs or (line is not None and p.line == line))
        and (kinds is None or p.kind in kinds)
        for p in report.problems
    )


@PROPERTY
@given(data=st.data())
def test_modified_entry_is_detected_at_its_seq(export, tmp_path_factory, data):
    index = data.draw(st.sampled_from(export.entry_lines))
    line = export.lines[index]
    part = data.draw(st.sampled_from(["hash", "envelope", "data"]))
    _, envelope, _ = split_line(line)
    start = {"hash": 6, "envelope": 76, "data": 76 + len(envelope) + 5}[part]
    stop = {"hash": 70, "envelope": 76 + len(envelope), "data": len(line) - 2}[part]
    position = data.draw(st.integers(start, stop - 1))
    replacement = data.draw(st.sampled_from(b"0123456789abcdefXYZ"))
    if line[position] == replacement:
        replacement = ord("q")
    tampered = list(export.lines)
    tampered[index] = line[:position] + bytes([replacement]) + line[position + 1 :]
    report = export.verify(tampered, tmp_path_factory.mktemp("t"))
    assert located(report, seqs={export.seq_at(index)}, line=index + 1), report.as_dict()


@PROPERTY
@given(data=st.data())
def test_deleted_entry_is_reported_missing(export, tmp_path_factory, data):
    index = data.draw(st.sampled_from(export.entry_lines))
    tampered = export.lines[:index] + export.lines[index + 1 :]
    report = export.verify(tampered, tmp_path_factory.mktemp("t"))
    assert located(report, seqs={export.seq_at(index)}, kinds={"missing", "truncated"})


@PROPERTY
@given(data=st.data())
def test_reordered_entries_are_reported(export, tmp_path_factory, data):
    first, second = sorted(data.draw(st.lists(st.sampled_from(export.entry_lines), min_size=2,
                                              max_size=2, unique=True)))  # fmt: skip
    tampered = list(export.lines)
    tampered[first], tampered[second] = tampered[second], tampered[first]
    report = export.verify(tampered, tmp_path_factory.mktemp("t"))
    seqs = set(range(export.seq_at(first), export.seq_at(second) + 1))
    assert located(report, seqs=seqs, kinds={"reordered"}), report.as_dict()


@PROPERTY
@given(data=st.data())
def test_inserted_entries_are_reported(export, tmp_path_factory, data):
    source = data.draw(st.sampled_from(export.entry_lines))
    after = data.draw(st.sampled_from([i for i in export.entry_lines if i >= source]))
    line = export.lines[source]
    if data.draw(st.booleans()):  # a forged entry, internally consistent with its predecessor
        previous = export.lines[source - 1]
        prev_hash = (
            bytes.fromhex(orjson.loads(previous)["h"])
            if previous.startswith(b'{"h"')
            else bytes.fromhex(orjson.loads(export.lines[0])["header"]["prev_hash"])
        )
        forged_data = canonical_json({"n": 999, "status": 500})
        fields = orjson.loads(split_line(line)[1])
        fields["data"] = data_digest(forged_data).hex()
        envelope = canonical_json(fields)
        line = export_line(link_hash(prev_hash, envelope), envelope, forged_data)
    tampered = [*export.lines[: after + 1], line, *export.lines[after + 1 :]]
    report = export.verify(tampered, tmp_path_factory.mktemp("t"))
    assert located(report, line=after + 2, kinds={"inserted"}), report.as_dict()


@PROPERTY
@given(data=st.data())
def test_truncation_after_a_checkpoint_is_reported(export, tmp_path_factory, data):
    cut = data.draw(st.sampled_from(export.checkpoint_lines[:-1]))
    report = export.verify(export.lines[: cut + 1], tmp_path_factory.mktemp("t"))
    assert located(report, seqs={export.seq_at(cut - 1) + 1}, kinds={"truncated"}), report.as_dict()


@PROPERTY
@given(data=st.data())
def test_rewritten_history_resigned_with_another_key_is_reported(export, tmp_path_factory, data):
    """The attacker changes an entry, recomputes every later hash and re-signs everything."""
    index = data.draw(st.sampled_from(export.entry_lines))
    resign = data.draw(st.booleans())
    attacker = CheckpointSigner("sparkplane/audit", Ed25519PrivateKey.generate())
    tampered = list(export.lines)
    prev = bytes.fromhex(orjson.loads(tampered[0])["header"]["prev_hash"])
    for i, line in enumerate(tampered):
        if line.startswith(b'{"h":"'):
            stored, envelope, payload = split_line(line)
            if i == index:
                payload = canonical_json({"n": -1, "status": 200})
                fields = orjson.loads(envelope)
                fields["data"] = data_digest(payload).hex()
                envelope = canonical_json(fields)
            prev = link_hash(prev, envelope) if i >= index else stored
            tampered[i] = export_line(prev, envelope, payload)
        elif resign and i > index and line.startswith(b'{"checkpoint"'):
            size = parse_checkpoint(orjson.loads(line)["checkpoint"]).size
            tampered[i] = canonical_json({"checkpoint": attacker.sign(size, prev, _now())}) + b"\n"
    if resign:
        header = orjson.loads(tampered[0])["header"] | {"key_id": attacker.key_id.hex()}
        tampered[0] = sign_header(attacker, header)
    report = export.verify(tampered, tmp_path_factory.mktemp("t"))
    seq = export.seq_at(index)
    first_checkpoint = min(c for c in _checkpoint_sizes(export) if c >= seq)
    kinds = {"unknown_key"} if resign else {"checkpoint_mismatch"}
    assert not report.valid
    flagged = [p for p in report.problems if p.kind in kinds and p.checkpoint is not None]
    assert flagged and min(p.checkpoint for p in flagged) == first_checkpoint, report.as_dict()
    if not resign:  # the damaged range starts right after the last good checkpoint
        assert flagged[0].seq <= seq <= flagged[0].checkpoint


@PROPERTY
@given(data=st.data())
def test_corrupted_checkpoint_signature_is_reported(export, tmp_path_factory, data):
    index = data.draw(st.sampled_from(export.checkpoint_lines))
    note = orjson.loads(export.lines[index])["checkpoint"]
    body, signature = note.rsplit(" ", 1)
    flip = data.draw(st.integers(8, len(signature) - 4))  # inside the 64-byte signature
    char = "A" if signature[flip] != "A" else "B"
    tampered = list(export.lines)
    forged = body + " " + signature[:flip] + char + signature[flip + 1 :]
    tampered[index] = canonical_json({"checkpoint": forged}) + b"\n"
    report = export.verify(tampered, tmp_path_factory.mktemp("t"))
    assert located(report, line=index + 1, kinds={"bad_signature"}), report.as_dict()


def _checkpoint_sizes(export: Export) -> list[int]:
    return [parse_checkpoint(orjson.loads(export.lines[i])["checkpoint"]).size
            for i in export.checkpoint_lines]  # fmt: skip


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_dropping_every_checkpoint_and_rewriting_is_reported(export, tmp_path_factory):
    """Without checkpoints nothing is signed over the entries: that alone is a failure."""
    kept = [line for line in export.lines if not line.startswith(b'{"checkpoint"')]
    report = export.verify(kept, tmp_path_factory.mktemp("t"))
    assert located(report, seqs={1}, kinds={"uncovered"}), report.as_dict()


@PROPERTY
@given(data=st.data())
def test_entries_appended_after_the_last_checkpoint_are_reported(export, tmp_path_factory, data):
    count = data.draw(st.integers(1, 3))
    last = export.lines[export.entry_lines[-1]]
    stored, envelope, _ = split_line(last)
    prev, added = stored, []
    for extra in range(count):
        fields = orjson.loads(envelope)
        payload = canonical_json({"n": 1000 + extra})
        fields |= {"seq": fields["seq"] + 1 + extra, "data": data_digest(payload).hex()}
        forged = canonical_json(fields)
        prev = link_hash(prev, forged)
        added.append(export_line(prev, forged, payload))
    tampered = [*export.lines[:-1], *added, export.lines[-1]]  # before the public key line
    report = export.verify(tampered, tmp_path_factory.mktemp("t"))
    first_added = export.seq_at(export.entry_lines[-1]) + 1
    assert located(report, seqs={first_added}, kinds={"uncovered", "inserted"}), report.as_dict()
