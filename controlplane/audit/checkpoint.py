"""Signed checkpoints in the C2SP signed-note / tlog-checkpoint text format, and the audit key.

A checkpoint note (https://c2sp.org/tlog-checkpoint, https://c2sp.org/signed-note):

    <origin>\\n<size>\\n<base64 head hash>\\ntime <RFC 3339>\\n
    \\n
    — <origin> <base64(key id || signature)>\\n

The Ed25519 signature covers the text up to and including the newline before the blank line;
key id = SHA-256(name || 0x0A || 0x01 || raw public key)[:4].
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controlplane.audit.chain import format_time
from controlplane.core.signing import load_private_key, public_pem, raw_public_bytes, verify

ED25519_TYPE = b"\x01"
SIGNATURE_DASH = "\u2014 "


class CheckpointError(ValueError):
    """A note that is not a well-formed checkpoint."""


def key_id(name: str, pubkey: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + raw_public_bytes(pubkey)).digest()[
        :4
    ]


def public_key_path(key_path: Path) -> Path:
    return key_path.with_suffix(".pub")


def staged_key_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".next")


def stage_private_key(key_path: Path, private: Ed25519PrivateKey) -> None:
    """Write the key next to `key_path` (mode 0600 from the first byte, fsynced)."""
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    staged = staged_key_path(key_path)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


def activate_staged_key(key_path: Path) -> None:
    """Atomically make the staged key the signing key and refresh the `.pub` beside it."""
    os.replace(staged_key_path(key_path), key_path)
    public_key_path(key_path).write_bytes(public_pem(load_private_key(key_path).public_key()))


def write_private_key(path: Path, private: Ed25519PrivateKey) -> None:
    stage_private_key(path, private)
    activate_staged_key(path)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The audit signing key at `path`, generated (0600) on first start."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private_key(path, Ed25519PrivateKey.generate())
    key = load_private_key(path)
    if not public_key_path(path).exists():
        public_key_path(path).write_bytes(public_pem(key.public_key()))
    return key


class SigningKeyFile:
    """The audit key on disk. `signer()` notices when the file was replaced (a rotation by this
    or another process, e.g. `sparkplane audit rotate-key` beside a running server) and reloads."""

    def __init__(self, path: Path, origin: str) -> None:
        self.path, self.origin = Path(path), origin
        self._stamp: tuple[int, int] | None = None
        self._signer: CheckpointSigner | None = None

    def signer(self) -> CheckpointSigner:
        stat = self.path.stat()
        if self._signer is None or self._stamp != (stat.st_ino, stat.st_mtime_ns):
            self._signer = CheckpointSigner(self.origin, load_or_create_key(self.path))
            self._stamp = (stat.st_ino, stat.st_mtime_ns)
        return self._signer


def rotation_fields(old: CheckpointSigner, new_key: Ed25519PrivateKey) -> dict[str, str]:
    """Data of the `audit.key_rotated` entry; the old key's checkpoint over it vouches for it."""
    new_public = new_key.public_key()
    return {
        "key_name": old.origin,
        "key_id": key_id(old.origin, new_public).hex(),
        "public_key": base64.b64encode(raw_public_bytes(new_public)).decode(),
        "previous_key_id": old.key_id.hex(),
        "previous_public_key": base64.b64encode(raw_public_bytes(old.public_key)).decode(),
    }


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...]
    body: bytes  # the signed text
    signatures: tuple[tuple[str, bytes, bytes], ...]  # (name, key id, signature)


class CheckpointSigner:
    """Signs checkpoints with one Ed25519 key under the key name `origin`."""

    def __init__(self, origin: str, private_key: Ed25519PrivateKey) -> None:
        if not origin or any(ch.isspace() or ch == "+" for ch in origin):
            raise ValueError(f"checkpoint origin {origin!r} must be non-empty, no spaces or '+'")
        self.origin = origin
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(origin, self.public_key)

    def sign(self, size: int, root_hash: bytes, moment: datetime) -> str:
        body = f"{self.origin}\n{size}\n{base64.b64encode(root_hash).decode()}\n"
        body += f"time {format_time(moment)}\n"
        sig = self.private_key.sign(body.encode())
        blob = base64.b64encode(self.key_id + sig).decode()
        return f"{body}\n{SIGNATURE_DASH}{self.origin} {blob}\n"


def parse_checkpoint(note: str) -> Checkpoint:
    """Split a signed note into its checkpoint fields; CheckpointError says what is wrong."""
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise CheckpointError("not a signed note (no blank line before the signatures)")
    body, sig_text = note[: cut + 1], note[cut + 2 :]
    lines = body.split("\n")[:-1]
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs origin, size and root hash lines")
    origin, size_text, root_text = lines[:3]
    if not size_text.isdigit():
        raise CheckpointError(f"checkpoint size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error as exc:
        raise CheckpointError("checkpoint root hash is not base64") from exc
    if len(root) != 32:
        raise CheckpointError("checkpoint root hash is not 32 bytes")
    signatures = []
    for line in sig_text.splitlines():
        parts = line.split(" ")
        if not line.startswith(SIGNATURE_DASH) or len(parts) != 3:
            raise CheckpointError(f"malformed signature line {line!r}")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error as exc:
            raise CheckpointError("signature is not base64") from exc
        if len(blob) != 68:
            raise CheckpointError("Ed25519 signature must be 4-byte key id + 64 bytes")
        signatures.append((parts[1], blob[:4], blob[4:]))
    if not signatures:
        raise CheckpointError("checkpoint has no signature")
    return Checkpoint(
        origin, int(size_text), root, tuple(lines[3:]), body.encode(), tuple(signatures)
    )


def check_signature(
    checkpoint: Checkpoint, trusted: dict[bytes, tuple[str, Ed25519PublicKey]]
) -> str | None:
    """None if a trusted key signed it, else 'unknown_key' or 'bad_signature'."""
    for name, kid, sig in checkpoint.signatures:
        known = trusted.get(kid)
        if known is None or known[0] != name:
            continue
        return None if verify(known[1], checkpoint.body, sig) else "bad_signature"
    return "unknown_key"
