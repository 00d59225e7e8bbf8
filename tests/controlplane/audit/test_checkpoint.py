import base64
import hashlib
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from controlplane.audit.checkpoint import (
    CheckpointError,
    CheckpointSigner,
    check_signature,
    load_or_create_key,
    parse_checkpoint,
)

MOMENT = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)


def raw(key):
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_note_follows_c2sp_signed_note_layout_and_key_id():
    private = Ed25519PrivateKey.generate()
    signer = CheckpointSigner("example.org/audit", private)
    root = hashlib.sha256(b"head").digest()
    note = signer.sign(42, root, MOMENT)
    body, signature_line = note.split("\n\n")
    assert body.split("\n") == [
        "example.org/audit",
        "42",
        base64.b64encode(root).decode(),
        "time 2026-11-26T20:00:00.000000Z",
    ]
    dash, name, blob = signature_line.rstrip("\n").split(" ")
    assert dash == "\u2014" and name == "example.org/audit"
    decoded = base64.b64decode(blob)
    # C2SP: key id = SHA-256(name || 0x0A || 0x01 || public key)[:4]
    expected_id = hashlib.sha256(b"example.org/audit\n\x01" + raw(private)).digest()[:4]
    assert decoded[:4] == expected_id
    private.public_key().verify(decoded[4:], (body + "\n").encode())


def test_parse_and_check_signature_trusted_unknown_and_bad():
    private = Ed25519PrivateKey.generate()
    signer = CheckpointSigner("sparkplane/audit", private)
    note = signer.sign(3, bytes(32), MOMENT)
    parsed = parse_checkpoint(note)
    assert (parsed.size, parsed.root_hash) == (3, bytes(32))
    trusted = {signer.key_id: ("sparkplane/audit", private.public_key())}
    assert check_signature(parsed, trusted) is None
    assert check_signature(parsed, {}) == "unknown_key"
    forged = parse_checkpoint(note.replace("\n3\n", "\n4\n"))
    assert check_signature(forged, trusted) == "bad_signature"


@pytest.mark.parametrize(
    "note",
    ["no blank line\n", "o\nx\nAAAA\n\n\u2014 o AAAA\n", "o\n1\nAAAA\n\n\u2014 o AAAA\n", "o\n1\n"],
)
def test_malformed_notes_are_refused(note):
    with pytest.raises(CheckpointError):
        parse_checkpoint(note)


def test_key_is_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "keys" / "audit-signing.key"
    key = load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.with_suffix(".pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert raw(load_or_create_key(path)) == raw(key)
