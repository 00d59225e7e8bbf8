"""Ed25519 keys for bundle signing (and anything else that signs): generate, load, sign, verify.

Keys are stored as PEM (PKCS#8 private, SubjectPublicKeyInfo public) so that `openssl` can read
them too. Fingerprints follow OpenSSH's style: `SHA256:` + unpadded base64 of the SHA-256 of the
raw 32-byte public key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

PRIVATE_KEY_NAME = "bundle.key"
PUBLIC_KEY_NAME = "bundle.pub"


class SigningKeyError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key."""


def generate_keypair(out_dir: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write `bundle.key` (mode 0600) and `bundle.pub` into `out_dir`; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME
    if not overwrite and (key_path.exists() or pub_path.exists()):
        raise SigningKeyError(f"{key_path} or {pub_path} already exists; refusing to overwrite")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Create with 0600 from the start: a chmod after writing leaves a window where it is readable.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(key_path, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(key_path, 0o600)
    pub_path.write_bytes(public_pem(private.public_key()))
    return key_path, pub_path


def public_pem(pubkey: Ed25519PublicKey) -> bytes:
    return pubkey.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_public_bytes(pubkey: Ed25519PublicKey) -> bytes:
    return pubkey.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path}: not a PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    return parse_public_key(_read(path, "public key"), source=str(path))


def parse_public_key(data: bytes, *, source: str = "public key") -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{source}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{source}: not an Ed25519 public key ({type(key).__name__})")
    return key


def fingerprint(pubkey: Ed25519PublicKey) -> str:
    digest = hashlib.sha256(raw_public_bytes(pubkey)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def same_key(a: Ed25519PublicKey, b: Ed25519PublicKey) -> bool:
    return raw_public_bytes(a) == raw_public_bytes(b)


def sign(privkey: Ed25519PrivateKey, data: bytes) -> bytes:
    return privkey.sign(data)


def verify(pubkey: Ed25519PublicKey, data: bytes, sig: bytes) -> bool:
    try:
        pubkey.verify(sig, data)
    except InvalidSignature:
        return False
    return True


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise SigningKeyError(f"{what} file not found: {path}") from exc
    except OSError as exc:
        raise SigningKeyError(f"cannot read {what} {path}: {exc.strerror}") from exc
